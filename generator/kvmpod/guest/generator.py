"""kvmpod-generator: the systemd generator that turns the pod manifest into mount units at boot.

Called by systemd as `kvmpod-generator NORMAL_DIR [EARLY_DIR LATE_DIR]` (systemd.generator(7)).
This module is the edge: it reads the guest's files, runs the pure core and writes the result.
"""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .app_identity import known_ids, resolve_identity
from .app_services import Identity, app_service, plan_app_ids, plan_app_service
from ..pod.guest_paths import DEFAULT_MANIFEST, NETWORKS_PATH
from .mount_units import GuestSettings, plan_guest_units
from ..pod.inside_root import readlink_on_disk
from .kernel_cmdline import debug_requested, kvmpod_settings
from .kmsg import Log
from ..pod.image_manifests import load_image_apps
from ..pod.manifest import load_json, parse_pod_manifest
from ..pod.model import Pod
from ..pod.mounts import STAGE2_DIR, ResolvedPod, resolve_pod
from ..pod.names import is_ac_name
from .output import print_outputs, write_outputs
from ..pod.problems import InvalidInput, Problem
from ..pod.staging import staged_volumes
from .unitfile import DOCUMENTATION, PROGRAM, GeneratedFile, Output, UnsafeValue, render_unit

# Where a unit shipped in the guest would be (systemd.unit(5), system units).
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
EXIT_INVALID = 1
EXIT_USAGE = 2

USAGE = f"""usage: {PROGRAM} [--dry-run] [--manifest PATH] [--root DIR] [-v] [NORMAL_DIR [EARLY_DIR LATE_DIR]]

Writes systemd mount units for the kvmpod pod manifest into NORMAL_DIR.
  --dry-run        print every file it would write, with its name, and write nothing
  --manifest PATH  the pod manifest, as a guest path (default: kvmpod.manifest= on the
                   kernel command line, else {DEFAULT_MANIFEST})
  --root DIR       read the guest's files under DIR; units still name guest paths
  -v, --verbose    also log debug lines
"""


@dataclass(frozen=True)
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
        log.error(f"cannot write {error.filename or args.output_dir}: {error.strerror}; nothing of this run "
                  "was left behind")
        return EXIT_INVALID
    return status


def generate(args: Arguments, cmdline: str, log: Log) -> tuple[list[Output] | None, int]:
    """The outputs to write and the exit status; (None, status) when there is nothing to write."""
    settings = kvmpod_settings(cmdline)
    manifest = args.manifest or settings.get("manifest") or DEFAULT_MANIFEST
    try:
        text = _read_text(args.root, manifest)
        if text is None:
            log.debug(f"no pod manifest at {manifest}: not a kvmpod guest, nothing to do")
            return None, 0
        pod = parse_pod_manifest(load_json(text, manifest))
        guest = GuestSettings(manifest_path=manifest, ninep_options=settings.get("9p_options"))
        outputs = plan_pod(pod, args.root, guest, log.warning) + _plan_networks(args.root)
        if settings.get("pod_share") is not None:  # booted by kvmpod run: rkt's pod lifecycle
            from .lifecycle import plan_lifecycle, pod_share_tag

            outputs += plan_lifecycle([a.name for a in pod.apps], pod_share_tag(settings) or "", manifest,
                                      settings.get("9p_options"))
        return sorted(outputs, key=lambda o: o.path), 0
    except (InvalidInput, UnsafeValue) as error:
        problems = error.problems if isinstance(error, InvalidInput) else [Problem(manifest, str(error))]
        for problem in problems:
            log.error(str(problem))
        refusals = _refuse_apps(args.root, manifest)
        refused = ", ".join(r.path.split(".service.d/")[0] for r in refusals) or f"none staged in {STAGE2_DIR}"
        log.error(f"the pod's configuration is invalid: nothing is mounted, and these apps are refused: {refused}")
        return refusals, EXIT_INVALID


def plan_pod(pod: Pod, root: str, guest: GuestSettings, warn: Callable[[str], None]) -> list[Output]:
    """Mounts and app services for a valid pod whose guest tree is at `root` ("" for /); networks aside.

    Shared with `kvmpod explain` and `kvmpod status`, so they show exactly what the generator writes.
    """
    resolved = resolve_pod(pod, staged_volumes(pod), load_image_apps(pod, root), root, readlink_on_disk, warn)
    return plan_guest_units(resolved, guest) + _plan_app_services(resolved, root, guest.manifest_path)


def _plan_networks(root: str) -> list[Output]:
    """Units for the NICs the host described, if it did (most pods need no network units)."""
    text = _read_text(root, NETWORKS_PATH)
    if text is None:
        return []
    from .network import parse_guest_networks, plan_network_units  # ipaddress: only pods with NICs pay

    return plan_network_units(parse_guest_networks(load_json(text, NETWORKS_PATH)), NETWORKS_PATH)


def _plan_app_services(pod: ResolvedPod, root: str, manifest: str) -> list[Output]:
    """A unit for every app the guest ships none for; an app it does ship only gets its mounts wired."""
    outputs: list[Output] = []
    problems: list[Problem] = []
    identities: dict[str, Identity] = {}
    for app in pod.apps:
        if any(os.path.lexists(f"{root}{d}/{app_service(app.name)}") for d in UNIT_DIRS):
            continue
        if app.section is None or not app.section.exec:
            problems.append(Problem(f"{app.section_field}.exec", f"is empty and the guest has no {app.name}.service; "
                                                                 "give the app's command"))
            continue
        identity = resolve_identity(root + app.rootfs, app.section.user, app.section.group, app.section_field)
        if isinstance(identity, list):
            problems.extend(identity)
            continue
        identities[app.name] = identity
        outputs += plan_app_service(app, identity, manifest)
    if problems:
        raise InvalidInput(problems)
    return outputs + plan_app_ids(identities, known_ids(root, "passwd"), known_ids(root, "group"), manifest)


def _refuse_apps(root: str, manifest: str) -> list[Output]:
    """Fail closed: every app staged in /opt/stage2 gets a drop-in that makes its start fail.

    Without it an app unit installed in the guest could start with its volumes missing and
    write into the guest, where the data is lost.
    """
    try:
        names = sorted(n for n in os.listdir(root + STAGE2_DIR) if is_ac_name(n))
    except OSError:
        names = []
    text = render_unit(
        [("Unit", [("Documentation", DOCUMENTATION), ("SourcePath", manifest), ("AssertPathExists", "!/")])],
        comment="The pod's configuration is invalid (see the kernel log): refuse to start without the app's volumes.",
    )
    return [GeneratedFile(f"{name}.service.d/50-kvmpod-invalid-manifest.conf", text) for name in names]


def _read_text(root: str, path: str) -> str | None:
    """The file's text; None when it does not exist. Any other failure is invalid input: an
    unreadable manifest must fail closed like a broken one, not let the apps start."""
    try:
        with open(root + path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"not UTF-8 ({error.reason})"
        raise InvalidInput([Problem(path, f"cannot be read: {reason}; fix its permissions or content")]) from None


if __name__ == "__main__":
    sys.exit(main())
