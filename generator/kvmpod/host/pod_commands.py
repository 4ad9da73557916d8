"""The CLI's pod commands on the host: run (a whole pod), list, status UUID, stop, gc, stage1 build.
Each returns text for stdout or, for commands that print as they go, an exit status."""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..pod.files import read_text
from ..pod.model import Pod
from ..pod.mounts import STAGE2_DIR
from ..pod.problems import InvalidInput, Problem
from .hypervisor.argv import HostSettings
from .hypervisor.boot_files import check_boot_files
from .hypervisor.launch import host_runs_systemd
from .hypervisor.pod_devices import qemu_console_chardev
from .pods.machined import register_machine, register_own_unit
from .pods.machine_unit import RUN_UNIT_ENV, run_in_unit, run_unit_name
from .net import pod_network
from .net.nics import guest_description, parse_uuid
from .net.run_networks import PodNet
from .pods.stage import stage_etc_files, stage_pod
from .pods.pod_dirs import (PodDir, first_failure, gc, list_pods, manifest_apps, parse_duration, pod_dir, pod_exit_status, pod_state,
                   pods_dir, read_exit_records, read_state, is_running)
from .hypervisor.guest_stop import ask_to_stop, manager_running_in
from . import run as runner
from .run import Stage1, new_pod_uuid, parse_app_images, run_pod
from .images import store
from .images.image_source import is_image_reference
from .images.references import resolve_local
from .pods.command_line import (APP_BOOL_FLAGS, APP_VALUE_FLAGS, BuiltPod, ImageInfo, PodFlags,
                                resolve_and_build)


def _stage1(opts: argparse.Namespace) -> Stage1:
    if opts.stage1:
        root = Path(opts.stage1)
        problems = [Problem("--stage1", f"{root / name} is missing; give a directory made by kvmpod stage1 build "
                                        f"--out") for name in ("root", "vmlinuz") if not (root / name).exists()]
        if problems:
            raise InvalidInput(problems)
        initrd = root / "initrd.img"
        return Stage1(str(root / "root"), str(root / "vmlinuz"), str(initrd) if initrd.exists() else None)
    from .images import stage1

    try:
        image = stage1.ensure_stage1()
    except stage1.ImageBuildError as error:
        raise RuntimeError(f"cannot build the stage1 image: {error}") from None
    return Stage1(str(image.root), str(image.vmlinuz), str(image.initrd))


class _AppFlagFirst(argparse.Action):
    """An app flag before the first image: rkt said "--exec must follow an image" (and argparse would
    take --cpu for an abbreviation of --cpus)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        raise InvalidInput([Problem(option_string or self.dest, "is an app flag and comes after its image: kvmpod "
                                                                "run [POD FLAGS] IMAGE [APP FLAGS] [-- ARGS]")])


def add_run_command_line(run: argparse.ArgumentParser) -> None:
    """kvmpod run's pod flags for rkt's command line (host.pods.command_line), and its images."""
    run.add_argument("--volume", action="append", default=[], metavar="NAME,kind=host,source=PATH|NAME,kind=empty",
                     help="a pod volume (rkt's syntax; [,readOnly=true][,recursive=false]; empty: [,mode=0755]"
                          "[,uid=N][,gid=N])")
    run.add_argument("--set-env", action="append", default=[], metavar="NAME=VALUE", help="for every app")
    run.add_argument("--set-env-file", action="append", default=[], metavar="FILE",
                     help="NAME=VALUE lines for every app (# comments)")
    run.add_argument("--mount", action="append", default=[], metavar="volume=NAME,target=PATH",
                     help="before the first image: in every app; after an image: in that app")
    for flag in (*APP_VALUE_FLAGS, *APP_BOOL_FLAGS):
        if flag not in run._option_string_actions:  # --memory, --set-env, --mount: pod flags here
            run.add_argument(flag, nargs="?", action=_AppFlagFirst, help=argparse.SUPPRESS)
    run.add_argument("images", nargs=argparse.REMAINDER, metavar="IMAGE [APP FLAGS] [-- ARGS] [--- IMAGE ...]",
                     help="oci:PATH[:REF], oci-archive:PATH[:REF], docker-archive:PATH[:REPO:TAG], an .aci or a "
                          "directory; app flags: " + ", ".join(sorted(APP_VALUE_FLAGS) + list(APP_BOOL_FLAGS)))


def resolve_image(word: str) -> ImageInfo:
    """An IMAGE word of kvmpod run: oci:, oci-archive:, docker-archive: through the image store
    (unpacked once, host.images.store), else an .aci or a directory (host.images.references)."""
    if is_image_reference(word):
        stored = store.fetch(word, say=lambda text: sys.stderr.write(f"kvmpod: {text}\n"))
        manifest = resolve_local(stored.path).manifest
        return ImageInfo(word, stored.name, stored.path, manifest, stored.digest)
    found = resolve_local(word)
    return ImageInfo(word, found.name, found.path, found.manifest, found.image_id)


def command_line_pod(opts: argparse.Namespace) -> BuiltPod:
    """The pod manifest of `kvmpod run [POD FLAGS] IMAGE ...` (host.pods.command_line). Store images are
    recorded as the pod's (store.record_use) by run.prepare, as for --app."""
    given = [f for f, v in (("--manifest", opts.manifest), ("--app", opts.app)) if v]
    if given:
        raise InvalidInput([Problem(given[0], "cannot be given with images: give either IMAGE [APP FLAGS] ... or "
                                              "--manifest POD --app NAME=IMAGE")])
    flags = PodFlags(volumes=tuple(opts.volume), set_env=tuple(opts.set_env),
                     set_env_files=tuple(opts.set_env_file), mounts=tuple(opts.mount), cwd=os.getcwd())
    return resolve_and_build(flags, list(opts.images), resolve_image)


def run_command(opts: argparse.Namespace, load: Callable, host_argv: Callable) -> int:
    """kvmpod run IMAGE ... or --manifest POD --app NAME=IMAGE ...: the pod from start to end; its exit
    status."""
    if opts.images or not opts.manifest:
        built = command_line_pod(opts)
        inputs = load(opts, (json.dumps(built.document, indent=2).encode() + b"\n", built.pod))
        images = built.images
    else:
        pod_only = [f"--{f.replace('_', '-')}" for f in ("volume", "set_env", "set_env_file", "mount")
                    if getattr(opts, f)]
        if pod_only:
            raise InvalidInput([Problem(pod_only[0], "builds the pod manifest from images; with --manifest, write "
                                                     "it in the manifest")])
        inputs = load(opts)
        images = parse_app_images(opts.app, inputs.pod)
    pod_uuid = inputs.pod_uuid or new_pod_uuid()
    for option in ("kernel", "initrd"):
        if getattr(opts, option):
            raise InvalidInput([Problem(f"--{option}", "comes from the stage1 with --app; use --stage1 DIR")])
    in_unit = os.environ.get(RUN_UNIT_ENV) == run_unit_name(pod_uuid)
    if host_runs_systemd() and not opts.no_systemd and not in_unit:
        # the pod's own unit in machine.slice runs this same command (host.pods.machine_unit)
        if os.path.exists(pod_dir(pod_uuid).path):
            raise InvalidInput([Problem("--uuid", f"pod {pod_uuid} already exists in {pods_dir()}; give another "
                                                  f"UUID or remove it (kvmpod gc)")])
        if opts.stage1:
            _stage1(opts)  # a bad --stage1 is refused here, before a unit is made
        words = list(getattr(opts, "argv_words", None) or sys.argv[1:])
        if "--uuid" not in words and not any(w.startswith("--uuid=") for w in words):
            words += ["--uuid", pod_uuid]
        return run_in_unit([sys.executable, "-m", "kvmpod.host.cli", *words], pod_uuid,
                           runner.STOP_SECONDS + 30)
    networks = guest_description(inputs.networks, pod_uuid) if inputs.networks else None
    pod_net = PodNet.from_options(opts, inputs.pod, pod_uuid, external=bool(inputs.networks))
    try:
        stage1 = _stage1(opts)
        # before anything of the pod is made: a missing QEMU or a damaged kernel is one clear error
        check_boot_files(HostSettings.lkvm_binary if opts.hypervisor == "lkvm" else HostSettings.qemu_binary, stage1)

        def argv_for(pod) -> list[str]:
            boot = argparse.Namespace(**vars(opts))
            boot.rootfs, boot.kernel, boot.initrd = pod.rootfs, stage1.vmlinuz, stage1.initrd
            # QEMU's console is a socket kvmpod run reads into the capped console.log; lkvm's console
            # is its stdout, which kvmpod run keeps in the capped hypervisor.log
            boot.console = qemu_console_chardev(pod.path) if opts.hypervisor == "qemu" else "stdio"
            boot.pod_dir, boot.uuid = pod.path, pod_uuid
            nets = pod_net.networks if pod_net is not None and pod_net.configs else inputs.networks
            return host_argv(boot, type(inputs)(inputs.manifest_bytes, inputs.pod, nets, pod_uuid))

        register = None
        if in_unit:
            def register(pid: int) -> str:  # the machine is this unit; its leader, this kvmpod run
                return register_own_unit(pod_uuid, os.getpid())
        elif host_runs_systemd() and not opts.no_systemd:
            def register(pid: int) -> str:
                return register_machine(pod_uuid, pid)

        return run_pod(pod_model=inputs.pod, manifest_bytes=inputs.manifest_bytes, images=images, networks=networks,
                       pod_uuid=pod_uuid, stage1=stage1, keep=opts.keep, argv_for=argv_for, register=register,
                       network_up=_network_up(pod_net, inputs.pod, inputs.manifest_bytes) if pod_net else None,
                       network_down=_network_down)
    except KeyboardInterrupt:
        sys.stderr.write("kvmpod: interrupted before the pod started\n")
        return 130


def _network_up(pod_net: PodNet, pod: Pod, manifest_bytes: bytes) -> Callable[[PodDir, Callable[[str], None]], None]:
    """run's network step: host.net sets the networks up, host.pods writes what the guest reads of them
    (networks.json, resolv.conf, hosts, hostname) into the pod's root."""
    def up(pod_dir: PodDir, say: Callable[[str], None]) -> None:
        files = pod_net.up(pod_dir.path, pod_dir.rootfs, say)
        if files.description is not None:
            stage_pod(pod_dir.rootfs, manifest_bytes, files.description)
        if files.guest_files:
            stage_etc_files(pod_dir.rootfs, [a.name for a in pod.apps], files.guest_files, files.app_files,
                            STAGE2_DIR)
    return up


def _network_down(pod_dir: PodDir) -> list[str]:
    """Undo the pod's networks as its net.json records them (nothing when it has none); the problems left."""
    return pod_network.teardown(pod_dir.path)


# ---------------------------------------------------------------- list, status, stop, gc

def _when(stamp: object) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "-"


def pod_report(uuid: str) -> dict:
    pod = pod_dir(parse_uuid(uuid, "UUID"))
    if not os.path.isdir(pod.path):
        raise InvalidInput([Problem("UUID", f"no pod {uuid} in {os.path.dirname(pod.path)}; see kvmpod list")])
    state = read_state(pod)
    apps = state.get("apps") or manifest_apps(pod)
    exits, unreadable = read_exit_records(pod, apps)
    report = {"uuid": pod.uuid, "state": pod_state(pod), "created": state.get("created"),
              "finished": state.get("finished"), "exit_status": state.get("exit_status"), "how": state.get("how"),
              "apps": [{"name": a, "exit_status": e.exit_status if e else None, "result": e.result if e else None,
                        "ended": e.describe() if e else unreadable.get(a, "running or no record")} for a, e in exits.items()],
              "networks": pod_network.recorded_addresses(pod.path)}
    if report["state"] == "aborted":
        report["how"] = "kvmpod run and its VM were killed before the pod's end was recorded"
        report["exit_status"] = pod_exit_status(exits) if first_failure(exits) else None
    return report


def _status_text(report: dict) -> str:
    lines = [f"pod {report['uuid']}", f"state: {report['state']}"
             + (f" (exit status {report['exit_status']}: {report['how']})" if report["state"] != "running" else ""),
             f"created: {_when(report['created'])}", f"finished: {_when(report['finished'])}", "apps:"]
    width = max([len(a["name"]) for a in report["apps"]] + [3])
    lines += [f"  {a['name']:<{width}}  {a['ended']}" for a in report["apps"]]
    if report.get("networks"):
        lines.append("networks:")
        lines += [f"  {n['interface']}  {n['address']}  ({n['network']}, host side {n['tap']})"
                  for n in report["networks"]]
    return "\n".join(lines) + "\n"


def _list_text() -> str:
    rows = [("UUID", "STATE", "EXIT", "CREATED", "APPS", "ADDRESSES")]
    for pod in list_pods():
        state = read_state(pod)
        exit_status = state.get("exit_status")
        rows.append((pod.uuid, pod_state(pod), "-" if exit_status is None else str(exit_status),
                     _when(state.get("created")), ",".join(state.get("apps") or manifest_apps(pod)),
                     ",".join(f"{n['network']}:{n['address']}" for n in pod_network.recorded_addresses(pod.path)) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "".join("  ".join(f"{r[i]:<{widths[i]}}" for i in range(5)) + f"  {r[5]}\n" for r in rows)


def _stop(uuid: str, timeout: float) -> int:
    pod = pod_dir(parse_uuid(uuid, "UUID"))
    if not os.path.isdir(pod.path):
        raise InvalidInput([Problem("UUID", f"no pod {uuid}; see kvmpod list")])
    if not is_running(pod):
        raise InvalidInput([Problem("UUID", f"pod {uuid} is not running ({pod_state(pod)})")])
    deadline = time.monotonic() + timeout
    pressed_at, pressed, error = 0.0, False, None
    while is_running(pod):
        # Again every 15 s: the guest may not have listened yet. Until one press got through, retry
        # each second (QEMU may not have made its socket yet); once one did, a failure is only the
        # VM going away (QEMU removes its socket as it exits) while kvmpod run records the end.
        if time.monotonic() - pressed_at > (runner.PRESS_AGAIN_SECONDS if pressed else 1.0):
            # Ctrl-Alt-Del once systemd runs, and the power button (hypervisor/guest_stop.py)
            error = ask_to_stop(pod, manager_running_in(pod))
            pressed = pressed or error is None
            pressed_at = time.monotonic()
        if time.monotonic() > deadline:
            why = f": {error}" if error is not None and not pressed else ""
            raise RuntimeError(f"pod {uuid} did not stop within {timeout:.0f} s{why}; its kvmpod run kills it "
                               f"after a second Ctrl-C, or kill its hypervisor")
        time.sleep(0.2)
    return 0


def cat_manifest(uuid: str) -> str:
    """kvmpod cat-manifest UUID: the pod manifest the pod ran with, as kvmpod run wrote it."""
    pod = pod_dir(parse_uuid(uuid, "UUID"))
    if not os.path.isdir(pod.path):
        raise InvalidInput([Problem("UUID", f"no pod {uuid} in {os.path.dirname(pod.path)}; see kvmpod list")])
    text = read_text(pod.manifest, f"pod {uuid}: pod.json")
    if text is None:
        raise InvalidInput([Problem("UUID", f"pod {uuid} has no pod.json (it was being made, or was removed)")])
    return text if text.endswith("\n") else text + "\n"


def pods_command(opts: argparse.Namespace) -> str | int:
    if opts.command == "list":
        return _list_text()
    if opts.command == "cat-manifest":
        return cat_manifest(opts.uuid)
    if opts.command == "status":
        report = pod_report(opts.uuid)
        text = json.dumps(report, indent=2) + "\n" if opts.json else _status_text(report)
        sys.stdout.write(text)
        return 0
    if opts.command == "stop":
        return _stop(opts.uuid, opts.timeout)
    try:
        older = parse_duration(opts.older_than)
    except ValueError:
        raise InvalidInput([Problem("--older-than", f"{opts.older_than!r} is not an age; give e.g. 90s, 30m, 2h"
                                    )]) from None
    kept: list[str] = []

    def undo_networks(pod) -> bool:
        problems = _network_down(pod)
        kept.extend(f"kept {pod.uuid}: cannot undo its network: {p}\n" for p in problems)
        return not problems

    removed, running = gc(older, before_remove=undo_networks)
    text = "".join(f"removed {u}\n" for u in removed) + "".join(f"kept {u} (running)\n" for u in running)
    if kept:
        sys.stderr.write("".join(kept))
    return text


def image_command(opts: argparse.Namespace) -> str | int:
    """kvmpod image ...: the store's commands (images/image_commands.py), told which images running pods use."""
    from .images.image_commands import image_command as run_image_command
    from .images.store import images_in_use

    def in_use() -> dict[str, list[str]]:
        return images_in_use(p.path for p in list_pods() if is_running(p))

    return run_image_command(opts, in_use, parse_duration)


def stage1_command(opts: argparse.Namespace) -> str:
    from .images import stage1

    if opts.action in ("list", "gc"):
        return stage1_upkeep(opts.action, opts.older_than, stage1.CACHE_ROOT)
    try:
        image = stage1.ensure_stage1(Path(opts.deb) if opts.deb else None, opts.mirror)
        if opts.out:
            out = Path(opts.out)
            out.mkdir(parents=True, exist_ok=True)
            if (out / "root").exists():
                raise InvalidInput([Problem("--out", f"{out / 'root'} exists; give an empty directory")])
            from .run import _copy_tree

            _copy_tree(str(image.root), str(out / "root"))
            for name in ("vmlinuz", "initrd.img"):
                _copy_tree(str(image.root.parent / name), str(out / name))
            return f"{out}\n"
    except stage1.ImageBuildError as error:
        raise RuntimeError(f"cannot build the stage1 image: {error}") from None
    return f"{image.root.parent}\n"


# ---------------------------------------------------------------- enter, logs

def enter_command(opts: argparse.Namespace) -> int:
    from .pods.enter_client import check_pod, enter

    pod = pod_dir(parse_uuid(opts.uuid, "UUID"))
    command = opts.cmd[1:] if opts.cmd[:1] == ["--"] else opts.cmd
    app = check_pod(pod, opts.app)
    sys.stdout.flush()
    return enter(pod, app, command)


def logs_command(opts: argparse.Namespace) -> int:
    from .pods.pod_logs import show_logs

    pod = pod_dir(parse_uuid(opts.uuid, "UUID"))
    try:
        return show_logs(pod, opts.app, opts.follow, sys.stdout.write, sys.stdout.flush)
    except KeyboardInterrupt:
        return 130


def stage1_upkeep(action: str, older_than: str, cache: Path) -> str:
    """kvmpod stage1 list | gc (host.images.stage1_cache); gc under the cache's lock (no build runs)."""
    import fcntl

    from .images import stage1_cache

    pods = [(is_running(p), read_state(p)) for p in list_pods()]
    used = stage1_cache.in_use(cache, pods)
    if action == "list":
        rows = [("ENTRY", "KIND", "STATE", "BUILT", "LAST USED")]
        for e in stage1_cache.entries(cache):
            state = ("in use" if e.name in used else "ok") if e.problem is None else f"damaged: {e.problem}"
            rows.append((e.name, e.kind, state if e.kind in ("base", "stage1") else "-", _when(e.built),
                         _when(e.last_used)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}\n"
                       for r in rows)
    try:
        age = parse_duration(older_than)
    except ValueError:
        raise InvalidInput([Problem("--older-than", f"{older_than!r} is not an age; give e.g. 90s, 30m, 2h")]) from None
    if not cache.is_dir():
        return ""
    out = []
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for e in stage1_cache.plan_gc(stage1_cache.entries(cache), used, age):
            stage1_cache.remove_entry(e.path)
            out.append(f"removed {e.name} ({e.kind})\n")
    return "".join(out)
