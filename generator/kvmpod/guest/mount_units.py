"""The generator's plan: a resolved pod becomes the unit files and links to write (pure)."""

from ..pod.frozen import frozen

from .app_services import app_service
from ..pod.mounts import STAGE2_DIR, AppMount, ResolvedPod
from ..pod.problems import InvalidInput, Problem
from ..pod.staging import StagedVolume
from .unitfile import DOCUMENTATION, GeneratedFile, Output, Section, render_unit, requires_link
from .unitname import hash_long_name, mount_unit_name

# Why these: rkt lost writes made just before shutdown with cache=loose and moved to mmap (as did
# Kata and Lima for writable shares); kernels before 5.15 default msize to 8 KiB, which is slow.
DEFAULT_9P_OPTIONS = (("trans", "virtio"), ("version", "9p2000.L"), ("cache", "mmap"), ("msize", "262144"))


@frozen
class GuestSettings:
    manifest_path: str  # as the guest sees it: SourcePath= of every unit
    ninep_options: str | None = None  # kvmpod.9p_options= from the kernel command line
    share: str | None = None  # kvmpod.share= from the kernel command line: None or "9p", or "virtiofs"


# How the host exports host volumes; it tells the guest on the kernel command line (kvmpod.share=),
# because that is the one thing the host writes per boot into exactly this boot, like the argv it
# belongs with (a file in the shared stage1 tree could be stale from another launch).
SHARES = ("9p", "virtiofs")


def ninep_mount_options(overrides: str | None, read_only: bool) -> str:
    """Defaults merged with `key=value,…` overrides, key by key; a bare word (e.g. `noatime`) is added."""
    options: dict[str, str | None] = dict(DEFAULT_9P_OPTIONS)
    for item in (overrides or "").split(","):
        if item:
            key, has_value, value = item.partition("=")
            options[key] = value if has_value else None
    options.pop("ro", None)
    options.pop("rw", None)
    words = [key if value is None else f"{key}={value}" for key, value in options.items()]
    return ",".join(words + (["ro"] if read_only else []))


def empty_volume_service(staged: StagedVolume) -> str:
    return hash_long_name(f"kvmpod-empty-volume-{staged.stage_name}.service")


def staging_unit(staged: StagedVolume) -> str:
    """The unit that makes /mnt/<volume> ready: a 9p mount, or the service creating the directory."""
    if staged.volume.kind == "host":
        return mount_unit_name(staged.guest_path)
    return empty_volume_service(staged)


def plan_guest_units(pod: ResolvedPod, settings: GuestSettings) -> list[Output]:
    outputs: list[Output] = []
    problems: list[Problem] = []
    if settings.share not in (None, *SHARES):
        raise InvalidInput([Problem("kvmpod.share", f"is {settings.share!r} on the kernel command line; the host "
                                                    f"must say one of {', '.join(SHARES)}")])
    for app in pod.apps:
        for mount in app.mounts:
            try:
                bind_unit, text = _bind_mount(app.name, mount, settings)
            except ValueError as error:  # a path systemd cannot name or a unit file cannot hold
                problems.append(Problem(mount.field, f"{error}; choose another path"))
                continue
            outputs.append(GeneratedFile(bind_unit, text))
            outputs.append(requires_link(app_service(app.name), bind_unit))
    if problems:
        raise InvalidInput(problems)
    for staged in pod.staged:
        render = _ninep_mount if staged.volume.kind == "host" else _empty_volume
        outputs.append(GeneratedFile(staging_unit(staged), render(staged, settings)))
    outputs.sort(key=lambda o: o.path)
    return outputs


def _common(description: str, settings: GuestSettings) -> list[tuple[str, str]]:
    return [("Description", description), ("Documentation", DOCUMENTATION), ("SourcePath", settings.manifest_path)]


def _ninep_mount(staged: StagedVolume, settings: GuestSettings) -> str:
    if settings.share == "virtiofs":
        return _virtiofs_mount(staged, settings)
    sections: list[Section] = [
        ("Unit", _common(f"kvmpod host volume {staged.stage_name}", settings)),
        ("Mount", [
            ("What", staged.tag),
            ("Where", staged.guest_path),
            ("Type", "9p"),
            ("Options", ninep_mount_options(settings.ninep_options, staged.volume.read_only is True)),
        ]),
    ]
    return render_unit(sections)


def _virtiofs_mount(staged: StagedVolume, settings: GuestSettings) -> str:
    """The same volume over virtio-fs: the tag is the device's, no transport options (9p's do not apply)."""
    mount = [("What", staged.tag), ("Where", staged.guest_path), ("Type", "virtiofs")]
    if staged.volume.read_only is True:
        mount.append(("Options", "ro"))
    return render_unit([("Unit", _common(f"kvmpod host volume {staged.stage_name} (virtio-fs)", settings)),
                        ("Mount", mount)])


def _empty_volume(staged: StagedVolume, settings: GuestSettings) -> str:
    volume = staged.volume
    path = staged.guest_path
    unit = _common(f"kvmpod empty volume {staged.stage_name}", settings)
    # Bind mounts from it order after it and sit before local-fs.target, so it cannot take the
    # default dependencies (they would order it after sysinit.target: a cycle).
    unit += [("DefaultDependencies", "no"), ("RequiresMountsFor", path), ("After", "local-fs-pre.target"),
             ("Conflicts", "shutdown.target"), ("Before", "shutdown.target")]
    sections: list[Section] = [
        ("Unit", unit),
        ("Service", [
            ("Type", "oneshot"),
            ("RemainAfterExit", "yes"),
            ("ExecStart", f"/bin/mkdir -p {path}"),
            ("ExecStart", f"/bin/chown {volume.uid}:{volume.gid} {path}"),
            ("ExecStart", f"/bin/chmod {volume.mode:04o} {path}"),
        ]),
    ]
    return render_unit(sections)


def _bind_mount(app_name: str, mount: AppMount, settings: GuestSettings) -> tuple[str, str]:
    where = f"{STAGE2_DIR}/{app_name}/rootfs{mount.target}"
    unit = mount_unit_name(where)
    source = staging_unit(mount.staged)
    options = ("rbind" if mount.recursive else "bind") + (",ro" if mount.read_only else "")
    sections: list[Section] = [
        ("Unit", _common(f"kvmpod volume {mount.staged.stage_name} for app {app_name} at {mount.target}", settings) + [
            ("Requires", source),
            ("After", source),
            ("Before", app_service(app_name)),
        ]),
        ("Mount", [
            ("What", mount.staged.guest_path),
            ("Where", where),
            ("Type", "none"),
            ("Options", options),
        ]),
    ]
    return unit, render_unit(sections)
