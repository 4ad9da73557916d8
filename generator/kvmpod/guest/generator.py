"""kvmpod-generator: the systemd generator that turns the pod manifest into mount units at boot.

Called by systemd as `kvmpod-generator NORMAL_DIR [EARLY_DIR LATE_DIR]` (systemd.generator(7)).
This module is the edge: it reads the guest's files, runs the pure core and writes the result.
"""

import os
import stat
import sys
from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot
from ..pod.frozen import frozen

from .app_identity import known_ids, resolve_identity
from .app_services import Identity, app_service, plan_app_ids, plan_app_service
from .app_settings import app_settings
from ..pod.image_annotations import DOCKER_REPOSITORY, image_annotations
from ..pod.guest_paths import DEFAULT_MANIFEST, NETWORKS_PATH
from .mount_units import GuestSettings, plan_guest_units
from ..pod.inside_root import UnsafePath, readlink_on_disk, resolve_inside_root
from .kernel_cmdline import debug_requested, kvmpod_settings
from .kmsg import Log
from ..pod.files import read_text
from ..pod.image_manifests import load_image_apps
from ..pod.manifest import NAME_SERVICE_FILES, load_json, parse_pod_manifest
from ..pod.model import Pod
from ..pod.mounts import STAGE2_DIR, ResolvedApp, ResolvedPod, resolve_pod
from ..pod.names import is_ac_name
from .output import print_outputs, write_outputs
from ..pod.problems import InvalidInput, Problem
from ..pod.staging import staged_volumes
from ..pod.limits import NAME_MAX, path_problem, program_problem
from .unitfile import DOCUMENTATION, PROGRAM, GeneratedFile, Output, UnsafeValue, render_unit, unit_value

# Where a unit shipped in the guest would be (systemd.unit(5), system units).
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
EXIT_INVALID = 1
MAX_UNIT_NAME_BYTES = 255  # systemd's UNIT_NAME_MAX (256) less the NUL
EXIT_USAGE = 2

USAGE = f"""usage: {PROGRAM} [--dry-run] [--manifest PATH] [--root DIR] [-v] [NORMAL_DIR [EARLY_DIR LATE_DIR]]

Writes systemd mount units for the kvmpod pod manifest into NORMAL_DIR.
  --dry-run        print every file it would write, with its name, and write nothing
  --manifest PATH  the pod manifest, as a guest path (default: kvmpod.manifest= on the
                   kernel command line, else {DEFAULT_MANIFEST})
  --root DIR       read the guest's files under DIR; units still name guest paths
  -v, --verbose    also log debug lines
"""


@frozen
class Arguments:
    output_dir: str | None
    dry_run: bool
    manifest: str | None
    root: str
    verbose: bool


class UsageError(Exception):
    pass


def parse_arguments(argv: list[str]) -> Arguments:
    # Hand-rolled: argparse would cost boot time for four options.
    dirs: list[str] = []
    dry_run = verbose = False
    manifest = None
    root = ""
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            raise UsageError("")
        if arg == "--dry-run":
            dry_run = True
        elif arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("--manifest", "--root") or arg.startswith(("--manifest=", "--root=")):
            name, eq, value = arg.partition("=")
            if not eq:
                following = next(args, None)
                if following is None:
                    raise UsageError(f"{name} needs a value")
                value = following
            if name == "--manifest":
                manifest = value
            else:
                root = value.rstrip("/")
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        else:
            dirs.append(arg)
    if len(dirs) not in ((0, 1, 3) if dry_run else (1, 3)):
        raise UsageError("give one output directory or three (normal, early, late)")
    if manifest is not None and (not manifest.startswith("/") or "\n" in manifest):
        raise UsageError(f"--manifest {manifest!r}: give the manifest's absolute path in the guest, on one line")
    return Arguments(dirs[0] if dirs else None, dry_run, manifest, root, verbose)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_arguments(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        sys.stderr.write((f"{PROGRAM}: {error}\n" if str(error) else "") + USAGE)
        return EXIT_USAGE if str(error) else 0
    log = None
    try:
        try:
            cmdline = _read_text(args.root, "/proc/cmdline") or ""
        except InvalidInput:
            cmdline = ""  # no settings from it: the defaults apply
        # A boot-time run logs to the kernel log; --root and --dry-run are for people and tests.
        log = Log(PROGRAM, use_kmsg=not (args.root or args.dry_run),
                  verbose=args.verbose or debug_requested(cmdline))
        outputs, status = generate(args, cmdline, log)
        if outputs is None:
            return status
        if args.dry_run:
            print_outputs(outputs, sys.stdout.write)
            return status
        try:
            assert args.output_dir is not None  # parse_arguments: only a dry run may omit it
            write_outputs(outputs, args.output_dir)
        except OSError as error:
            log.error(f"cannot write {error.filename or args.output_dir}: {error.strerror}; removed what this run "
                      "had written")
            # Still fail closed: an app must not start without the mounts just removed. Each refusal on
            # its own, so one failing write does not cost the others; say what is left.
            written = _write_refusals(args, log, announce=False)
            staged = [r.path.split(".service.d/")[0] for r in _refuse_apps(args.root, None, log)]
            if written:
                log.error(f"wrote the refusal drop-in (50-kvmpod-invalid-manifest.conf) for {', '.join(written)}: "
                          "these apps will not start")
            if len(written) < len(staged) or not staged:
                missing = [a for a in staged if a not in written]
                log.error("no app is staged in /opt/stage2: nothing to refuse" if not staged else
                          f"could not refuse {', '.join(missing)}: they may start without their volumes")
            return EXIT_INVALID
        return status
    except Exception as error:  # MemoryError, RecursionError, a bug: whatever it is, fail closed
        if log is None:
            log = Log(PROGRAM, use_kmsg=not (args.root or args.dry_run), verbose=False)
        log.error(f"internal error ({type(error).__name__}: {str(error)[:200]}); please report it")
        _write_refusals(args, log, announce=True)
        return EXIT_INVALID


def _write_refusals(args: Arguments, log: Log, *, announce: bool) -> list[str]:
    """The last resort: refuse every staged app, each drop-in on its own (one failing write must not
    cost the others), depending on nothing but the listing of /opt/stage2. Returns the apps refused."""
    refusals = _refuse_apps(args.root, None, log)
    if announce:
        _log_refused(log, refusals)
    if args.dry_run or args.output_dir is None:
        print_outputs(refusals, sys.stdout.write)
        return []
    written = []
    for refusal in refusals:
        try:
            write_outputs([refusal], args.output_dir)
            written.append(refusal.path.split(".service.d/")[0])
        except OSError as error:
            log.error(f"cannot write {error.filename}: {error.strerror}")
    return written


def _log_refused(log: Log, refusals: list[Output]) -> None:
    refused = ", ".join(r.path.split(".service.d/")[0] for r in refusals) or f"none staged in {STAGE2_DIR}"
    log.error(f"the pod's configuration is invalid: nothing is mounted, and these apps are refused: {refused}")


def generate(args: Arguments, cmdline: str, log: Log) -> tuple[list[Output] | None, int]:
    """The outputs to write and the exit status; (None, status) when there is nothing to write."""
    settings = kvmpod_settings(cmdline)
    manifest = args.manifest or settings.get("manifest") or DEFAULT_MANIFEST
    try:
        return plan_boot(args.root, manifest, settings, "--manifest" if args.manifest else "kvmpod.manifest", log), 0
    except (InvalidInput, UnsafeValue) as error:
        problems = error.problems if isinstance(error, InvalidInput) else [Problem(manifest, str(error))]
        for problem in problems:
            log.error(str(problem))
        refusals = _refuse_apps(args.root, manifest, log)
        _log_refused(log, refusals)
        return refusals, EXIT_INVALID


def plan_boot(root: str, manifest: str, settings: dict[str, str], manifest_option: str,
              log: Log) -> list[Output] | None:
    """Everything this boot's generator writes for the guest tree at `root` ("" for /), sorted; None
    when there is no pod manifest. Raises InvalidInput (or UnsafeValue) for a pod it must refuse.

    Shared with the host (kvmpod.host.pods.prerendered_units), which renders kvmpod run's pods before boot."""
    _check_settings(manifest, settings, manifest_option)
    text = _read_text(root, manifest)
    if text is None:
        log.debug(f"no pod manifest at {manifest}: not a kvmpod guest, nothing to do")
        return None
    pod = parse_pod_manifest(load_json(text, manifest))
    guest = GuestSettings(manifest_path=manifest, ninep_options=settings.get("9p_options"),
                          share=settings.get("share"))
    outputs = plan_pod(pod, root, guest, log.warning) + _plan_networks(root)
    if settings.get("pod_share") is not None:  # booted by kvmpod run: rkt's pod lifecycle
        from .lifecycle import plan_lifecycle, pod_share_tag

        outputs += plan_lifecycle([a.name for a in pod.apps], pod_share_tag(settings) or "", manifest,
                                  settings.get("9p_options"))
    _refuse_collisions(pod, outputs)
    return sorted(outputs, key=lambda o: o.path)


def _refuse_collisions(pod: Pod, outputs: list[Output]) -> None:
    """Two outputs of one name are the manifest's doing (an app named like one of kvmpod's own
    units, e.g. `kvmpod-app-ids`): an input error found before writing, not a failed write."""
    seen: set[str] = set()
    problems = []
    for output in outputs:
        if output.path in seen:
            unit = output.path.split("/")[0].removesuffix(".requires").removesuffix(".wants")
            field = next((f"apps[{i}].name" for i, a in enumerate(pod.apps) if app_service(a.name) == unit), "apps")
            problems.append(Problem(field, f"kvmpod would write {output.path} twice: the name collides with a unit "
                                           "kvmpod generates itself; rename the app"))
        seen.add(output.path)
    if problems:
        raise InvalidInput(problems)


def _check_settings(manifest: str, settings: dict[str, str], manifest_option: str) -> None:
    """The manifest's path (--manifest or kvmpod.manifest=) and kvmpod.9p_options= go into units
    as they are: refuse them up front if no unit file can hold them (a trailing backslash, …)."""
    problems = []
    problem = "is not absolute" if not manifest.startswith("/") else path_problem(manifest)
    if problem is not None:
        problems.append(Problem(manifest_option, f"{manifest!r:.200} {problem}; give the manifest's absolute path"))
    for name, key, value in ((manifest_option, "SourcePath", manifest),
                             ("kvmpod.9p_options", "Options", settings.get("9p_options"))):
        try:
            if value is not None and not problems:
                unit_value(key, value)
        except UnsafeValue as error:
            problems.append(Problem(name, f"{error}; fix the kernel command line"))
    if problems:
        raise InvalidInput(problems)


def plan_pod(pod: Pod, root: str, guest: GuestSettings, warn: Callable[[str], None]) -> list[Output]:
    """Mounts and app services for a valid pod whose guest tree is at `root` ("" for /); networks aside.

    Shared with `kvmpod explain` and `kvmpod status`, so they show exactly what the generator writes.
    """
    resolved = resolve_pod(pod, staged_volumes(pod), load_image_apps(pod, root), root, readlink_on_disk, warn)
    return plan_guest_units(resolved, guest) + _plan_app_services(resolved, root, guest.manifest_path, warn, pod)


def _plan_networks(root: str) -> list[Output]:
    """Units for the NICs the host described, if it did (most pods need no network units)."""
    text = _read_text(root, NETWORKS_PATH)
    if text is None:
        return []
    from .network import parse_guest_networks, plan_network_units  # ipaddress: only pods with NICs pay

    return plan_network_units(parse_guest_networks(load_json(text, NETWORKS_PATH)), NETWORKS_PATH)


def _plan_app_services(pod: ResolvedPod, root: str, manifest: str,
                       warn: Callable[[str], None] = lambda _: None, manifest_pod: Pod | None = None) -> list[Output]:
    """A unit for every app the guest ships none for; an app it does ship only gets its mounts wired."""
    outputs: list[Output] = []
    problems: list[Problem] = []
    identities: dict[str, Identity] = {}
    has_networks = os.path.lexists(root + NETWORKS_PATH)
    override_name_service = manifest_pod is not None and manifest_pod.annotation(NAME_SERVICE_FILES) == "guest"
    for app in pod.apps:
        if any(os.path.lexists(f"{root}{d}/{app_service(app.name)}") for d in UNIT_DIRS):
            continue
        if app.section is None or not app.section.exec:
            problems.append(Problem(f"{app.section_field}.exec", f"is empty and the guest has no {app.name}.service; "
                                                                 "give the app's command"))
            continue
        annotations = image_annotations(root, app.name)
        docker = DOCKER_REPOSITORY in annotations
        if docker:
            from .docker_compat import docker_identity, plan_volume_seeds  # only Docker-converted images pay
        identity = resolve_identity(root + app.rootfs, app.section.user, app.section.group, app.section_field)
        if isinstance(identity, list) and docker:
            identity = docker_identity(root + app.rootfs, app.section) or identity
        if isinstance(identity, list):
            problems.extend(identity)
            continue
        program = _program(app, root, problems)
        if program is None:
            continue
        identities[app.name] = identity
        settings = app_settings(app, identity, root, has_networks, annotations, problems, warn, override_name_service)
        outputs += plan_app_service(app, identity, manifest, settings, program)
        if docker and manifest_pod is not None:
            outputs += plan_volume_seeds(app, manifest_pod, manifest)
        if any(p.socket_activated for p in app.section.ports):
            from .app_sockets import plan_app_socket  # only pods with socket-activated ports pay

            exposed = manifest_pod.ports if manifest_pod is not None else ()
            outputs += plan_app_socket(app.name, app.section.ports, exposed, manifest, warn)
    if problems:
        raise InvalidInput(problems)
    supplementary = {app.name: app.section.supplementary_gids for app in pod.apps
                     if app.name in identities and app.section is not None}
    return outputs + plan_app_ids(identities, known_ids(root, "passwd"), known_ids(root, "group"), manifest,
                                  supplementary)


def _program(app: ResolvedApp, root: str, problems: list[Problem]) -> str | None:
    """exec[0] as a path inside the app (rkt's FindBinPath); a problem when it names nothing there,
    a directory, or a path systemd would refuse (the manifest's checks saw only exec[0] as written)."""
    assert app.section is not None
    program = app.section.exec[0]
    field = f"{app.section_field}.exec[0]"
    found: str | None = program
    if not program.startswith("/"):
        from .exec_path import find_program  # only apps with a relative exec[0] pay

        path = next((e.value for e in app.section.environment if e.name == "PATH"), None)
        found = find_program(root + app.rootfs, program, app.section.working_directory or "/", path)
        if found is None:
            where = f"the app's PATH {path!r}" if path is not None else "its working directory, /bin and /usr/bin"
            problems.append(Problem(field, f"{program!r} is not an executable file in {where} inside the app's "
                                           "rootfs; give its absolute path"))
            return None
    problem = program_problem(found)
    if problem is None and _is_directory_inside(root + app.rootfs, found):
        problem = "names a directory in the app's rootfs (systemd: \"Is a directory\"); give the program's file"
    if problem is not None:
        problems.append(Problem(field, f"{program!r:.300}" + (f" (found as {found!r:.300})" if found != program
                                                               else "") + f" {problem}"))
        return None
    return found


def _is_directory_inside(rootfs_on_disk: str, path: str) -> bool:
    """Whether `path`, resolved inside the app's rootfs as systemd's RootDirectory= will, is a directory there."""
    try:
        real = resolve_inside_root(rootfs_on_disk, path, readlink_on_disk)
        return stat.S_ISDIR(os.lstat(rootfs_on_disk.rstrip("/") + real).st_mode)
    except (UnsafePath, OSError, ValueError):
        return False


def _refuse_apps(root: str, manifest: str | None, log: Log) -> list[Output]:
    """Fail closed: every app staged in /opt/stage2 gets a drop-in that makes its start fail.

    Without it an app unit installed in the guest could start with its volumes missing and
    write into the guest, where the data is lost. This depends on nothing but the directory
    listing: not on the manifest having parsed (SourcePath= is left out when the manifest's path
    cannot be written into a unit), not on anything a crash may have left half done.
    """
    try:
        names = sorted(n for n in os.listdir(root + STAGE2_DIR) if is_ac_name(n))
    except (OSError, ValueError):
        names = []
    if manifest is not None:
        try:
            unit_value("SourcePath", manifest)
        except UnsafeValue:
            manifest = None
    if manifest is not None and not manifest.startswith("/"):
        manifest = None  # systemd ignores a relative SourcePath= with a warning
    unit = [("Documentation", DOCUMENTATION)] + ([("SourcePath", manifest)] if manifest is not None else [])
    text = render_unit(
        [("Unit", unit + [("AssertPathExists", "!/")])],
        comment="The pod's configuration is invalid (see the kernel log): refuse to start without the app's volumes.",
    )
    refusals: list[Output] = []
    for name in names:
        if len(f"{name}.service") > MAX_UNIT_NAME_BYTES:
            continue  # systemd cannot load a unit of that name at all: nothing to refuse
        if len(f"{name}.service.d") > NAME_MAX:
            log.error(f"{STAGE2_DIR}/{name}: the drop-in directory {name}.service.d would be longer than "
                      f"{NAME_MAX} bytes, so a unit {name}.service cannot be refused; rename the app")
            continue
        refusals.append(GeneratedFile(f"{name}.service.d/50-kvmpod-invalid-manifest.conf", text))
    return refusals


def _read_text(root: str, path: str) -> str | None:
    """The file's text; None when it does not exist. Anything else (unreadable, not a regular file,
    too large, not UTF-8) is invalid input: it must fail closed like a broken manifest."""
    return read_text(root + path, path)


if __name__ == "__main__":
    sys.exit(main())
