"""Which volume lands where in each app: rkt 1.30's GenerateMounts, with the mount target
resolved inside the app's rootfs so it can never escape it.
"""

from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot
from .frozen import frozen

from .inside_root import ReadLink, UnsafePath, clean_path, resolve_inside_root
from .limits import stage_name_problem
from .model import App, AppSection, MountPoint, Pod, Volume
from .problems import InvalidInput, Problem
from .staging import StagedVolume, app_volume_stage_name

STAGE2_DIR = "/opt/stage2"


def app_dir(app_name: str) -> str:
    return f"{STAGE2_DIR}/{app_name}"


def app_rootfs(app_name: str) -> str:
    return f"{app_dir(app_name)}/rootfs"


def image_manifest_path(app_name: str) -> str:
    return f"{app_dir(app_name)}/manifest"


@frozen
class AppMount:
    staged: StagedVolume
    target: str  # absolute inside the app's rootfs, symlinks resolved
    read_only: bool
    recursive: bool
    field: str  # the manifest field it came from, for messages


@frozen
class ResolvedApp:
    name: str
    section: AppSection | None  # the pod manifest's app, else the image manifest's
    section_field: str  # where that section is, for messages: "apps[0].app" or "<image manifest>: app"
    mounts: tuple[AppMount, ...]
    read_only_rootfs: bool = False  # the pod manifest's readOnlyRootFS

    @property
    def rootfs(self) -> str:
        return app_rootfs(self.name)


@frozen
class ResolvedPod:
    apps: tuple[ResolvedApp, ...]
    staged: tuple[StagedVolume, ...]  # every volume to stage, implicit ones included


@frozen
class ImageApp:
    """An image manifest's app, as the edge found it: `source` names the file for messages."""

    source: str
    section: AppSection | None


def resolve_pod(
    pod: Pod,
    staged: tuple[StagedVolume, ...],
    image_apps: dict[str, ImageApp],
    disk_root: str,
    readlink: ReadLink,
    warn: Callable[[str], None],
) -> ResolvedPod:
    """Every app's mounts, or InvalidInput naming every problem.

    `image_apps` holds the image manifest's app for each app whose pod entry has none;
    `disk_root` is where the guest root is on the disk being read ("" when it is `/`).
    """
    problems: list[Problem] = []
    by_stage_name = {s.stage_name: s for s in staged}
    implicit: list[StagedVolume] = []
    apps = []
    for i, app in enumerate(pod.apps):
        section, section_field = _section(app, i, image_apps)
        link = _symlink_above_rootfs(app.name, disk_root, readlink)
        if link is not None:
            problems.append(Problem(f"apps[{i}].name", f"{link} is a symlink in the guest; every directory from / "
                                                       f"down to {app_rootfs(app.name)} must be a real one, so that "
                                                       "nothing the app mounts lands outside it; replace the link"))
            continue
        mounts = _app_mounts(app, i, section, f"{section_field}.mountPoints", by_stage_name, implicit,
                             problems, warn)
        resolved = _resolve_targets(app, mounts, disk_root, readlink, problems)
        apps.append(ResolvedApp(app.name, section, section_field, tuple(resolved), app.read_only_rootfs))
    if problems:
        raise InvalidInput(problems)
    return ResolvedPod(tuple(apps), staged + tuple(implicit))


def _symlink_above_rootfs(app_name: str, disk_root: str, readlink: ReadLink) -> str | None:
    """The first symlink on the path from the guest's root to the app's rootfs, if any: mounts are
    resolved inside the rootfs, so a link above it (/opt/stage2 -> /, rootfs -> ..) would take
    them out of the app."""
    path = ""
    for component in app_rootfs(app_name).strip("/").split("/"):
        path += "/" + component
        if readlink(disk_root.rstrip("/") + path) is not None:
            return path
    return None


def _section(app: App, index: int, image_apps: dict[str, ImageApp]) -> tuple[AppSection | None, str]:
    if app.app is not None:
        return app.app, f"apps[{index}].app"
    image = image_apps.get(app.name)
    if image is None:
        return None, f"apps[{index}].app"
    return image.section, f"{image.source}: app"


@frozen
class _Wanted:
    staged: StagedVolume
    path: str
    read_only: bool
    field: str


def _app_mounts(app: App, index: int, section: AppSection | None, mount_point_field: str,
                by_stage_name: dict[str, StagedVolume], implicit: list[StagedVolume], problems: list[Problem],
                warn: Callable[[str], None]) -> list[_Wanted]:
    """The app's mounts[] then its uncovered mountPoints, each bound to the volume staged for it."""
    mount_points: tuple[MountPoint, ...] = section.mount_points if section else ()
    wanted: list[_Wanted] = []
    covered: set[str] = set()
    for j, mount in enumerate(app.mounts):
        field = f"apps[{index}].mounts[{j}]"
        covered.add(clean_path(mount.path))
        # manifest.py has checked that the volume exists.
        staged = by_stage_name.get(app_volume_stage_name(app.name, mount.volume)) or by_stage_name[mount.volume]
        # The mount point this mount fills, if the image declares one: same path, else same name.
        mount_point = next((mp for mp in mount_points if clean_path(mp.path) == clean_path(mount.path)), None) or \
            next((mp for mp in mount_points if mp.name == mount.volume), None)
        read_only = _read_only(staged.volume, mount_point)
        wanted.append(_Wanted(staged, mount.path, read_only, f"{field}.path"))
    for k, mp in enumerate(mount_points):
        if clean_path(mp.path) in covered:
            continue
        field = f"{mount_point_field}[{k}].path"
        matched = by_stage_name.get(mp.name)
        if matched is not None:
            staged = matched
        else:
            name = f"{app.name}-{mp.name}"
            if (problem := stage_name_problem(name)) is not None:
                problems.append(Problem(field, f"the implicit empty volume for mount point {mp.name!r} {problem}"))
                continue
            if name in by_stage_name:
                problems.append(Problem(field, f"the implicit empty volume for mount point {mp.name!r} would be "
                                               f"named {name!r}, which the pod already uses; add a mount for "
                                               f"{mp.path!r} to apps[{index}].mounts"))
                continue
            staged = StagedVolume(name, Volume(name, "empty"))
            by_stage_name[name] = staged
            implicit.append(staged)
            warn(f"app {app.name!r}: no volume for mount point {mp.name!r} ({mp.path}); using an implicit "
                 f"empty volume {name!r}, which is lost when the pod stops")
        wanted.append(_Wanted(staged, mp.path, _read_only(staged.volume, mp), field))
    return wanted


def _read_only(volume: Volume, mount_point: MountPoint | None) -> bool:
    if volume.read_only is not None:
        return volume.read_only
    return mount_point.read_only if mount_point else False


def _resolve_targets(app: App, wanted: list[_Wanted], disk_root: str, readlink: ReadLink,
                     problems: list[Problem]) -> list[AppMount]:
    rootfs_on_disk = disk_root.rstrip("/") + app_rootfs(app.name)
    by_target: dict[str, str] = {}
    resolved = []
    for w in wanted:
        try:
            target = resolve_inside_root(rootfs_on_disk, w.path, readlink)
        except UnsafePath as error:
            problems.append(Problem(w.field, f"{error}; fix the link in the app's rootfs"))
            continue
        if target == "/":
            problems.append(Problem(w.field, f"{w.path!r} is the app's whole rootfs; mount the volume on a "
                                             "directory inside it"))
            continue
        if target != target.rstrip():
            problems.append(Problem(w.field, f"{w.path!r} ends in white space, which systemd strips from "
                                             "Where=; rename the directory"))
            continue
        if (other := by_target.get(target)) is not None:
            problems.append(Problem(w.field, f"mounts on {target!r} in app {app.name!r}, as {other} does; "
                                             "give each mount its own path"))
            continue
        by_target[target] = w.field
        resolved.append(AppMount(w.staged, target, w.read_only, w.staged.volume.recursive is not False, w.field))
    return resolved
