"""kvmpod: the host helper. Prints the hypervisor argv for a pod, stages its files into the
stage1 rootfs, and explains what host and guest will do with one manifest.

    kvmpod args    --hypervisor lkvm|qemu --manifest POD --rootfs DIR --uuid UUID [...]
    kvmpod stage   --manifest POD --rootfs DIR [--uuid UUID --networks FILE | --cni-result FILE]
    kvmpod explain --hypervisor lkvm|qemu --manifest POD --rootfs DIR [...]
    kvmpod run     [POD FLAGS] IMAGE [APP FLAGS] [-- ARGS...] [--- IMAGE [APP FLAGS] [-- ARGS...]]...
    kvmpod run     --manifest POD --app NAME=DIR|FILE.aci|IMAGE ... [--hypervisor qemu|lkvm] [--uuid UUID] [--keep]
    kvmpod run     --hypervisor lkvm|qemu --manifest POD --rootfs DIR --uuid UUID [...] [--no-systemd]
    kvmpod list | status UUID | stop UUID | cat-manifest UUID | gc [--older-than AGE]   (pods of kvmpod run)
    kvmpod stage1 build [--out DIR] [--mirror URL] [--deb FILE] | list | gc [--older-than AGE]
    kvmpod image fetch IMAGE... | list | rm DIGEST|NAME... | gc [--older-than AGE]   (the image store)
    kvmpod status  [--json] [--generator-dir DIR]                  (in the guest: no UUID)

Every failure is one line per problem on stderr, naming the field, exit status 2, nothing on stdout.
"""

import argparse
import io
import json
import os
import shlex
import sys
from dataclasses import dataclass, replace

from ..pod.guest_paths import DEFAULT_MANIFEST
from ..guest.network import parse_guest_networks, plan_network_units
from ..guest.generator import plan_pod
from ..guest.mount_units import GuestSettings
from .hypervisor.argv import (ACCELS, DEFAULT_ROOT_TAG, EXTRA_KERNEL_PARAMS_ENV, HYPERVISORS, SHARES, HostSettings,
                        build_argv, detect_accel, kernel_params, volume_security_model)
from .pods.prerendered_units import render_units, store_units
from .hypervisor.transport_notes import UNSAFE_WRITES_HELP, transport_notes
from .net.nics import Network, guest_description, parse_cni_result, parse_networks, parse_uuid
from .net.run_flags import add_run_flags, given as net_flags_given
from .hypervisor.resources import Resources, app_resources
from .pods.stage import stage_pod
from .hypervisor.volumes import SECURITY_MODEL_HELP, SECURITY_MODELS, check_xattr_support, checked_host_volumes
from ..pod.files import read_input_file
from ..pod.image_manifests import load_image_apps
from ..pod.isolators import read_isolators
from .hypervisor.launch import (children_import_this_kvmpod, exec_hypervisor, host_runs_systemd, launch_environment,
                                start_transient_service)
from .images.image_commands import register as register_image_commands
from .pods.pod_dirs import use_state_dir
from .pod_commands import (add_run_command_line, enter_command, image_command, logs_command, pods_command, run_command,
                           stage1_command)
from ..pod.manifest import load_json, parse_pod_manifest
from ..pod.model import AppSection, Pod
from ..guest.output import print_outputs
from ..pod.problems import InvalidInput, Problem
from ..guest.status import (GENERATOR_DIR, all_well, pod_units, read_generated, read_state_over_dbus, render_json,
                     render_table, unit_states)
from ..guest.unitfile import UnsafeValue
from ..guest.unitname import mount_unit_name

PROGRAM = "kvmpod"
EXIT_INVALID = 2
EXPLAIN_UUID = "00000000-0000-0000-0000-000000000000"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other problem
        raise InvalidInput([Problem("usage", message)])


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROGRAM, description="Host helper for kvmpod pods.")
    parser.add_argument("--dir", help="where kvmpod keeps its pods and images (rkt's --dir; default $KVMPOD_DIR, "
                                      "else /var/lib/kvmpod); wins over KVMPOD_PODS_DIR and KVMPOD_IMAGES_DIR")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, *, hypervisor: bool, rootfs_required: bool = True) -> None:
        p.add_argument("--manifest", required=rootfs_required, help="the pod manifest (JSON)")
        p.add_argument("--rootfs", required=rootfs_required, help="the stage1 rootfs directory (the guest's root)")
        nets = p.add_mutually_exclusive_group()
        nets.add_argument("--networks", help="kvmpod's JSON network description (see kvmpod.host.net.nics)")
        nets.add_argument("--cni-result", help="a CNI plugin result, cniVersion 0.4.0 or 1.0.0")
        if not hypervisor:
            p.add_argument("--uuid", help="the pod UUID (needed with networks: MACs derive from it)")
            return
        if rootfs_required:
            p.add_argument("--hypervisor", required=True, choices=HYPERVISORS)
        else:
            p.add_argument("--hypervisor", default="qemu", choices=HYPERVISORS)
        p.add_argument("--pod-dir", help="a kvmpod run pod directory: adds its share, the apps' output "
                                         "port and the QMP socket (kvmpod.host.pods.pod_dirs), and renders the "
                                         "guest's units into ROOTFS/var/lib/kvmpod/units (kvmpod.units=)")
        p.add_argument("--kernel", help="guest kernel (default: ROOTFS/vmlinuz)")
        p.add_argument("--initrd", help="initrd (default: ROOTFS/initrd.img when present)")
        p.add_argument("--cpus", type=int, help="override the CPU count computed from the isolators")
        p.add_argument("--memory", type=int, help="override the memory in MiB computed from the isolators")
        p.add_argument("--console", default="stdio", help="stdio, file:PATH or socket:PATH (qemu only)")
        p.add_argument("--root-tag", default=DEFAULT_ROOT_TAG, help="9p tag of the root share (qemu, "
                                                                    "or lkvm with --initrd)")
        p.add_argument("--security-model", choices=SECURITY_MODELS, help=SECURITY_MODEL_HELP)
        p.add_argument("--share", default="9p", choices=SHARES, help="how host volumes reach the guest: 9p "
                                                                    "(default) or virtiofs (QEMU only)")
        p.add_argument("--unsafe-volume-writes", action="store_true", help=UNSAFE_WRITES_HELP)
        p.add_argument("--accel", default="auto", choices=ACCELS, help="auto: kvm only for hardware KVM")

    prerender_help = ("render the guest's units now, into ROOTFS/var/lib/kvmpod/units, and name them on the "
                      "kernel command line (kvmpod.units=): the guest unpacks them instead of starting Python "
                      "(always on with --pod-dir)")
    args = sub.add_parser("args", help="print the hypervisor argv")
    common(args, hypervisor=True)
    args.add_argument("--prerender", action="store_true", help=prerender_help)
    args.add_argument("--uuid", required=True, help="the pod UUID")
    args.add_argument("--format", default="shell", choices=("shell", "json", "lines"))
    explain = sub.add_parser("explain", help="show the guest's units and the host's argv side by side")
    common(explain, hypervisor=True)
    explain.add_argument("--uuid", default=EXPLAIN_UUID, help="the pod UUID (default: the nil UUID)")
    run = sub.add_parser("run", help="run a pod to its end: IMAGE [APP FLAGS] [-- ARGS] [--- IMAGE ...] (rkt's "
                                     "command line), or --manifest POD --app NAME=IMAGE for each app (with "
                                     "--rootfs: only start the hypervisor on a prepared stage1 tree)")
    common(run, hypervisor=True, rootfs_required=False)
    add_run_command_line(run)
    run.add_argument("--prerender", action="store_true", help=prerender_help + "; with --app it always is")
    run.add_argument("--uuid", help="the pod UUID (default: a new one)")
    run.add_argument("--app", action="append", default=[], metavar="NAME=DIR|FILE.aci|IMAGE",
                     help="an app's image: its rootfs directory, an unpacked image (manifest, rootfs/) or an .aci")
    run.add_argument("--keep", action="store_true",
                     help="keep the pod's own files (stage1/upper: the apps' rootfs, the guest's journal) after it ends; "
                          "its guest journal is then persistent (written over 9p, flushed before the apps start: "
                          "a slower start, for diagnosis; without --keep it stays in the guest's RAM), and the pod ends "
                          "with the guest's orderly shutdown, so that journal is closed with it")
    run.add_argument("--stage1", help="a stage1 image directory (root/, vmlinuz, initrd.img); default: "
                                      "kvmpod stage1 build's, built on first use")
    run.add_argument("--no-systemd", action="store_true", help="exec the hypervisor even on a systemd host")
    add_run_flags(run)
    sub.add_parser("list", help="the pods of kvmpod run on this host")
    cat_manifest = sub.add_parser("cat-manifest", help="print the pod manifest a pod of kvmpod run ran with")
    cat_manifest.add_argument("uuid")
    enter = sub.add_parser("enter", help="run a command (default /bin/sh) in an app's environment in a running pod")
    enter.add_argument("uuid")
    enter.add_argument("--app", help="the app (may be left out when the pod has one)")
    enter.add_argument("cmd", nargs="*", help="-- CMD ARGS...: the command (default: /bin/sh)")
    logs = sub.add_parser("logs", help="the apps' output of a pod (running or ended)")
    logs.add_argument("uuid")
    logs.add_argument("--app", help="only this app's lines")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the pod ends")
    stop = sub.add_parser("stop", help="stop a running pod cleanly (the ACPI power button)")
    stop.add_argument("uuid")
    stop.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the pod to end")
    gc_parser = sub.add_parser("gc", help="remove ended pods' directories (never a running pod's)")
    gc_parser.add_argument("--older-than", default="0s", help="only pods that ended this long ago (90s, 30m, 2h)")
    stage1 = sub.add_parser("stage1", help="the stage1 image every pod boots")
    stage1.add_argument("action", choices=("build", "list", "gc"),
                        help="build: make (or find) the stage1; list: the cache's entries; gc: remove all but the "
                             "newest, those running pods use and those used within --older-than")
    stage1.add_argument("--older-than", default="1h", help="gc: keep entries used more recently (default 1h)")
    stage1.add_argument("--out", help="also copy the image to DIR (root/, vmlinuz, initrd.img)")
    stage1.add_argument("--mirror", help="the Debian mirror (default: this host's apt configuration's)")
    stage1.add_argument("--deb", help="install this kvmpod .deb (default: build this checkout's)")
    status = sub.add_parser("status", help="with UUID: a pod of kvmpod run (host); without: in the guest, "
                                           "the state of every kvmpod mount and app unit")
    status.add_argument("uuid", nargs="?", help="the pod (on the host); none: this guest's units")
    status.add_argument("--generator-dir", default=GENERATOR_DIR,
                        help=f"where kvmpod-generator wrote this boot's units (default {GENERATOR_DIR})")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    register_image_commands(sub)
    stage = sub.add_parser("stage", help=f"copy the manifest (and networks) into ROOTFS{os.path.dirname(DEFAULT_MANIFEST)}")
    common(stage, hypervisor=False)
    return parser


@dataclass(frozen=True)
class _Inputs:
    manifest_bytes: bytes
    pod: Pod
    networks: tuple[Network, ...]
    pod_uuid: str | None


def _read(path: str, option: str) -> bytes:
    # As the guest reads its files: non-blocking, regular files only, size-capped (a FIFO is an error).
    return read_input_file(path, option)


def _json(path: str, option: str, data: bytes | None = None) -> object:
    data = _read(path, option) if data is None else data
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidInput([Problem(option, f"{path!r} is not UTF-8 text")]) from None
    return load_json(text, path)


def _load(opts: argparse.Namespace, built: tuple[bytes, Pod] | None = None) -> _Inputs:
    """The inputs of a pod command: the manifest from --manifest, or `built` from the command line."""
    if built is not None:
        manifest_bytes, pod = built
    else:
        manifest_bytes = _read(opts.manifest, "--manifest")  # read once: what is parsed is what is staged
        pod = parse_pod_manifest(_json(opts.manifest, "--manifest", manifest_bytes))
    refuse_empty_pod(pod)
    check_isolators(pod)
    networks: tuple[Network, ...] = ()
    if opts.networks:
        networks = parse_networks(_json(opts.networks, "--networks"))
    elif opts.cni_result:
        networks = parse_cni_result(_json(opts.cni_result, "--cni-result"))
    pod_uuid = parse_uuid(opts.uuid) if opts.uuid else None
    return _Inputs(manifest_bytes, pod, networks, pod_uuid)


def check_isolators(pod: Pod) -> None:
    """The isolators the pod manifest gives its apps, checked as the guest will check them, by every
    host command (`stage` too: it would stage a pod the guest refuses)."""
    problems: list[Problem] = []
    for i, app in enumerate(pod.apps):
        if app.app is not None:
            problems += read_isolators(app.app.isolators, f"apps[{i}].app.isolators", 0)[1]
    if problems:
        raise InvalidInput(problems)


def refuse_empty_pod(pod: Pod) -> None:
    """rkt: "pod must contain at least one application"; every host command refuses such a pod."""
    if not pod.apps:
        raise InvalidInput([Problem("apps", "is empty: a pod must contain at least one application; add one "
                                            "to apps[]")])


def _settings(opts: argparse.Namespace, pod_uuid: str) -> HostSettings:
    kernel = opts.kernel or os.path.join(opts.rootfs, "vmlinuz")
    initrd = opts.initrd
    if initrd is None and os.path.exists(os.path.join(opts.rootfs, "initrd.img")):
        initrd = os.path.join(opts.rootfs, "initrd.img")
    problems = []
    if not os.path.isdir(opts.rootfs):
        problems.append(Problem("--rootfs", f"{opts.rootfs!r} is not a directory"))
    if not os.path.isfile(kernel):
        problems.append(Problem("--kernel", f"{kernel!r} does not exist; give the guest kernel"))
    if initrd is not None and not os.path.isfile(initrd):
        problems.append(Problem("--initrd", f"{initrd!r} does not exist"))
    for option in ("cpus", "memory"):
        value = getattr(opts, option)
        if value is not None and value < 1:
            problems.append(Problem(f"--{option}", f"must be at least 1, not {value}"))
    if problems:
        raise InvalidInput(problems)
    return HostSettings(
        hypervisor=opts.hypervisor,
        pod_uuid=pod_uuid,
        rootfs=opts.rootfs,
        kernel=kernel,
        initrd=initrd,
        console=opts.console,
        root_tag=opts.root_tag,
        security_model=opts.security_model,
        share=opts.share,
        unsafe_volume_writes=opts.unsafe_volume_writes,
        accel=opts.accel,
        extra_kernel_params=os.environ.get(EXTRA_KERNEL_PARAMS_ENV, ""),
        pod_dir=getattr(opts, "pod_dir", None),
    )


def host_argv(opts: argparse.Namespace, inputs: _Inputs) -> list[str]:
    settings = _settings(opts, inputs.pod_uuid or EXPLAIN_UUID)
    staged = checked_host_volumes(inputs.pod)
    sections: dict[str, AppSection | None] = {
        name: image.section for name, image in load_image_apps(inputs.pod, opts.rootfs.rstrip('/'), required=False).items()}
    computed = app_resources(inputs.pod, sections)
    resources = Resources(cpus=opts.cpus or computed.cpus, memory_mib=opts.memory or computed.memory_mib)
    argv = build_argv(inputs.pod, staged, inputs.networks, settings, resources, detect_accel)
    if settings.hypervisor == "qemu" and settings.share == "9p":
        check_xattr_support(inputs.pod, staged, volume_security_model(settings))
    if settings.pod_dir is not None or getattr(opts, "prerender", False):
        # kvmpod's own pods, or asked for: the host renders the units now, the guest only unpacks them.
        units = render_units(settings.rootfs, kernel_params(settings, inputs.networks))
        if units is not None:
            settings = replace(settings, prerendered_units=units.cmdline_word)
            argv = build_argv(inputs.pod, staged, inputs.networks, settings, resources, detect_accel)
            store_units(settings.rootfs, units)
            for warning in units.warnings:
                sys.stderr.write(f"{PROGRAM}: warning: {warning}\n")
    return argv


def format_argv(argv: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(argv) + "\n"
    if fmt == "lines":
        return "".join(arg + "\n" for arg in argv)
    return shlex.join(argv) + "\n"


def _cmd_args(opts: argparse.Namespace) -> str:
    return format_argv(host_argv(opts, _load(opts)), opts.format)


def _cmd_stage(opts: argparse.Namespace) -> str:
    inputs = _load(opts)
    description = None
    if inputs.networks:
        if inputs.pod_uuid is None:
            raise InvalidInput([Problem("--uuid", "is required with networks: the guest MACs derive from it")])
        description = guest_description(inputs.networks, inputs.pod_uuid)
    return "".join(f"{path}\n" for path in stage_pod(opts.rootfs, inputs.manifest_bytes, description))


def _cmd_explain(opts: argparse.Namespace) -> str:
    inputs = _load(opts)
    argv = host_argv(opts, inputs)
    pod = inputs.pod
    warnings: list[str] = []
    outputs = plan_pod(pod, opts.rootfs.rstrip("/"), GuestSettings(manifest_path=DEFAULT_MANIFEST), warnings.append)
    if inputs.networks:
        description = guest_description(inputs.networks, inputs.pod_uuid or EXPLAIN_UUID)
        outputs += plan_network_units(parse_guest_networks(description), DEFAULT_MANIFEST)
    lines = [f"# kvmpod explain: {opts.manifest} with --hypervisor {opts.hypervisor}"
             + ("" if opts.uuid != EXPLAIN_UUID else " (nil UUID: pass --uuid for the real MACs and name)"), ""]
    rows = [("VOLUME / NIC", "HOST (hypervisor arguments)", "GUEST (units)")]
    for s in checked_host_volumes(pod):
        host = next((a for a in argv if a.endswith(f",{s.tag}")), "?")  # lkvm's --9p=SOURCE,TAG
        device = next((i for i, a in enumerate(argv) if a.endswith(f"mount_tag={s.tag}")), None)
        if device is not None:  # QEMU: the -fsdev (with the path) and its -device (with the tag)
            host = f"{argv[device - 2]} + {argv[device]}"
        rows.append((s.stage_name, host, f"{mount_unit_name(s.guest_path)}: What={s.tag} Where={s.guest_path}"))
    for i, net in enumerate(inputs.networks):
        host = next((a for a in argv if f"tapif={net.tap}," in a or f"ifname={net.tap}," in a), "?")
        rows.append((f"eth{i}", host, f"kvmpod-network-eth{i}.service: {net.guest_ip}/{net.prefix}"))
    width0 = max(len(r[0]) for r in rows)
    width1 = max(len(r[1]) for r in rows)
    lines += [f"{a:<{width0}}  {b:<{width1}}  {c}".rstrip() for a, b, c in rows]
    lines += ["", "## host argv", shlex.join(argv), ""]
    lines += [f"## note: {n}" for n in transport_notes(_settings(opts, inputs.pod_uuid or EXPLAIN_UUID),
                                                       checked_host_volumes(pod))]
    lines += [f"## warning: {w}" for w in warnings]
    lines += ["## guest units (kvmpod-generator)", ""]
    text = "\n".join(lines) + "\n"

    out = io.StringIO()
    print_outputs(sorted(outputs, key=lambda o: o.path), out.write)
    return text + out.getvalue()


def _cmd_run(opts: argparse.Namespace) -> str | int:
    if opts.rootfs is None:
        return run_command(opts, _load, host_argv)
    if opts.images:
        raise InvalidInput([Problem("IMAGE", "cannot be given with --rootfs (a prepared stage1 tree); give "
                                             "images, or the tree, not both")])
    if opts.manifest is None:
        raise InvalidInput([Problem("--manifest", "is required with --rootfs")])
    if opts.app:
        raise InvalidInput([Problem("--app", "cannot be given with --rootfs (a prepared stage1 tree); "
                                             "give the apps' images, or the tree, not both")])
    if net_flags_given(opts):
        raise InvalidInput([Problem(net_flags_given(opts)[0], "kvmpod run sets up networks only for the pods it "
                                    "prepares (--app); with --rootfs give --networks or --cni-result")])
    if opts.uuid is None:
        raise InvalidInput([Problem("--uuid", "is required with --rootfs")])
    inputs = _load(opts)
    argv = host_argv(opts, inputs)
    if opts.no_systemd or not host_runs_systemd():
        sys.stdout.flush()
        exec_hypervisor(argv)
    return start_transient_service(argv, inputs.pod_uuid or EXPLAIN_UUID,
                                   environment=launch_environment(opts.hypervisor)) + "\n"


def _cmd_status(opts: argparse.Namespace) -> tuple[str, int]:
    units = pod_units(read_generated(opts.generator_dir))
    if not units:
        raise InvalidInput([Problem("--generator-dir", f"{opts.generator_dir} holds no unit of kvmpod-generator: "
                                                       "this boot is not a kvmpod guest, or the manifest was invalid "
                                                       "(see the kernel log)")])
    states = unit_states(units, read_state_over_dbus)
    text = render_json(states) if opts.json else render_table(states)
    return text, 0 if all_well(states) else 1


def main(argv: list[str] | None = None) -> int:
    children_import_this_kvmpod()
    try:
        words = sys.argv[1:] if argv is None else argv
        command_words: list[str] = []
        if words[:1] == ["enter"] and "--" in words:  # kvmpod enter UUID [--app NAME] -- CMD ARGS...
            split = words.index("--")
            words, command_words = words[:split], words[split + 1:]
        opts = _parser().parse_args(words)
        if opts.command == "enter":
            opts.cmd = command_words or opts.cmd
        opts.argv_words = list(words)
        if opts.dir is not None:
            try:
                use_state_dir(opts.dir)
            except ValueError as error:
                raise InvalidInput([Problem("--dir", str(error))]) from None
        if opts.command == "status" and opts.uuid is None:
            text, status = _cmd_status(opts)
            sys.stdout.write(text)
            return status
        command = {"args": _cmd_args, "stage": _cmd_stage, "explain": _cmd_explain, "run": _cmd_run,
                   "list": pods_command, "status": pods_command, "stop": pods_command, "gc": pods_command,
                   "cat-manifest": pods_command, "enter": enter_command, "logs": logs_command,
                   "stage1": stage1_command, "image": image_command}[opts.command]
        text = command(opts)
        if isinstance(text, int):  # commands that printed as they went and end with a status
            return text
    except InvalidInput as error:
        for problem in error.problems:
            sys.stderr.write(f"{PROGRAM}: {problem}\n")
        return EXIT_INVALID
    except (UnsafeValue, ValueError, OSError, RuntimeError) as error:
        sys.stderr.write(f"{PROGRAM}: {' '.join(str(error).split())}\n")
        return EXIT_INVALID
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
