"""`kvmpod run`: from a pod manifest and app images to a finished pod, in one process.

1. Checks everything it can before writing anything (manifest, one image per app, networks).
2. Makes the pod directory (host.pods): the stage1 root as an overlay of the cached one with the pod's
   own upper dir, mounted in kvmpod run's own mount namespace (host.pods.pod_root: a killed kvmpod
   leaves no mount behind, and the cached image is never written), each app's rootfs at
   /opt/stage2/<app>/rootfs from a directory or an .aci, the image manifests, the pod manifest and
   the networks (staged as `kvmpod stage` does), and the pod share for the apps' exit records.
3. Boots it with the argv `kvmpod args --pod-dir` prints (the caller passes that function in), as a
   child process in its own session (a Ctrl-C on the terminal reaches kvmpod, not QEMU) that dies
   with kvmpod (PR_SET_PDEATHSIG) and inherits the pod's lock, so the pod counts as running exactly
   while kvmpod or its hypervisor lives. On a systemd host it is registered with systemd-machined
   (host.machined), which moves it into a scope in machine.slice.
4. Shows the apps' lines and the boot's progress (host.app_output) until the VM is gone; SIGINT,
   SIGTERM or SIGHUP press the VM's ACPI power button (QMP), the guest stops its apps with SIGTERM
   and powers off; a second Ctrl-C, or no poweroff within STOP_SECONDS, kills the VM.
5. Reads each app's end from the pod share, records the pod's end in state.json, and returns the
   status of the first app that failed, else 0 (130 after a Ctrl-C when no app failed).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from ..pod.model import Pod
from ..pod.mounts import STAGE2_DIR
from ..pod.problems import InvalidInput, Problem
from .hypervisor.argv import hypervisor_part
from .hypervisor.guest_stop import ask_to_stop, manager_running
from .images.aci import extract_aci
from .linux.parent_death import die_with_parent
from .images.store import fetch as fetch_image, is_image_reference, is_store_entry, record_use, stored_image_at
from .pods.app_output import Progress, boot_status
from .pods.capped_log import CappedLog, LogSource, log_cap
from .pods.enter_relay import EnterRelay
from .pods.pod_dirs import (PodDir, first_failure, hold_lock, pod_dir, pod_exit_status, pods_dir, read_exit_records,
                   write_state)
from .pods import app_root, kept_journal, pod_root, reserved_room
from .pods.stage import stage_pod

STOP_SECONDS = 180.0  # TCG guests take a while to stop their units and power off
PRESS_AGAIN_SECONDS = 15.0  # the power button again: the first press may come before logind listens
POLL_SECONDS = 0.1
CONNECT_POLL_SECONDS = 0.005
EXIT_INTERRUPTED = 130
EXIT_POD_BROKEN = 1


@dataclass(frozen=True)
class Stage1:
    root: str
    vmlinuz: str
    initrd: str | None


# ---------------------------------------------------------------- checks before anything is written

def _say(text: str) -> None:
    sys.stderr.write(f"kvmpod: {text}\n")


def parse_app_images(words: list[str], pod: Pod, say: Callable[[str], None] = _say) -> dict[str, str]:
    """`--app NAME=DIR|FILE.aci|IMAGE` for every app of the pod, each once. An image reference
    (oci:, oci-archive:, docker-archive:) is fetched into the store now; the app gets its entry."""
    images: dict[str, str] = {}
    problems: list[Problem] = []
    names = [a.name for a in pod.apps]
    mentioned = set()
    for word in words:
        name, eq, path = word.partition("=")
        mentioned.add(name)
        if not eq or not name or not path:
            problems.append(Problem("--app", f"{word!r}: give NAME=DIR, NAME=FILE.aci or NAME=IMAGE "
                                            f"(oci:PATH[:REF], oci-archive:PATH[:REF], docker-archive:PATH[:REPO:TAG])"))
        elif name not in names:
            problems.append(Problem("--app", f"{name!r} is not an app of the pod (its apps: {', '.join(names)})"))
        elif name in images:
            problems.append(Problem("--app", f"{name!r} is given twice"))
        elif is_image_reference(path):
            try:
                images[name] = fetch_image(path, say).path
            except InvalidInput as error:
                problems.extend(Problem("--app", f"{name}={p.field.removeprefix('image ')}: {p.message}")
                                for p in error.problems)
        elif not (os.path.isdir(path) or (os.path.isfile(path) and path.endswith(".aci"))):
            problems.append(Problem("--app", f"{name}={path}: not a directory nor an .aci file"))
        else:
            images[name] = os.path.abspath(path)
    for i, name in enumerate(names):
        if name not in mentioned:
            problems.append(Problem(f"apps[{i}]", f"app {name!r} has no image; add --app {name}=DIR (its rootfs, "
                                                  f"or an unpacked image with manifest and rootfs/) or "
                                                  f"--app {name}=FILE.aci"))
    if problems:
        raise InvalidInput(problems)
    return images


def new_pod_uuid() -> str:
    return str(uuidlib.uuid4())


# ---------------------------------------------------------------- the pod directory

def install_app(root: str, app: str, image: str, field: str) -> None:
    """/opt/stage2/<app>/rootfs (and manifest) in the stage1 root, from a directory or an .aci."""
    app_dir = os.path.join(root, STAGE2_DIR.lstrip("/"), app)
    os.makedirs(app_dir, exist_ok=False)
    if os.path.isfile(image):
        extract_aci(image, app_dir, field)
        return
    if os.path.isfile(os.path.join(image, "manifest")) and os.path.isdir(os.path.join(image, "rootfs")):
        pod_root.copy_root(os.path.join(image, "rootfs"), os.path.join(app_dir, "rootfs"))  # an unpacked image
        shutil.copyfile(os.path.join(image, "manifest"), os.path.join(app_dir, "manifest"))
    else:
        pod_root.copy_root(image, os.path.join(app_dir, "rootfs"))  # the rootfs itself


def prepare(pod: PodDir, stage1: Stage1, manifest_bytes: bytes, images: dict[str, str],
            networks: list[dict] | None, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    with open(pod.manifest, "wb") as f:
        f.write(manifest_bytes)
    os.makedirs(pod.stage1)
    how = pod_root.make_root(stage1.root, pod, private_namespace=False)  # an overlay, in our own namespace
    say(f"stage1 root ready ({how}) in {time.monotonic() - started:.1f} s")
    stored = [s for path in images.values() if is_store_entry(path) and (s := stored_image_at(path)) is not None]
    if stored:  # before installing: from now on image gc leaves these entries alone
        record_use(pod.path, stored)
    for app, image in images.items():
        # a stored image is an overlay's lower layer, like the stage1 (pods.app_root); else a copy
        why = app_root.mount_store_app(pod, app, image) if how == "overlay" and is_store_entry(image) else ""
        if why:
            say(f"app {app}: its image copied (no overlay: {why})")
        if why is not None:
            install_app(pod.rootfs, app, image, f"--app {app}")
    stage_pod(pod.rootfs, manifest_bytes, networks)
    os.makedirs(pod.exits, mode=0o755)
    # room for the apps' records and the pod's end, should the disk fill up while the pod runs
    reserved_room.reserve(pod.share, reserved_room.RECORD_ROOM * max(len(images), 1))
    reserved_room.reserve(pod.path, reserved_room.STATE_ROOM)


# ---------------------------------------------------------------- boot and follow

class _Signals:
    def __init__(self) -> None:
        self.received: list[int] = []
        self.previous = {}

    def __enter__(self) -> "_Signals":
        # SIGRTMIN+4: `machinectl poweroff` of the pod's machine (host.pods.machine_unit)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGRTMIN + 4):
            self.previous[sig] = signal.signal(sig, lambda signum, frame: self.received.append(signum))
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _log_sources(pod: PodDir, argv: list[str], hypervisor_out: int) -> tuple[LogSource, LogSource | None, LogSource]:
    """The apps' output, the console (None when the argv has no console socket: lkvm) and the
    hypervisor's own output, each into its capped log in the pod directory."""
    words = "\n".join(argv)
    cap = log_cap()
    apps = LogSource(CappedLog(pod.apps_log, cap), socket_path=pod.apps_socket if pod.apps_socket in words else None)
    console = (LogSource(CappedLog(pod.console, cap), socket_path=pod.console_socket)
               if pod.console_socket in words else None)
    hypervisor = LogSource(CappedLog(pod.hypervisor_log, cap), fd=hypervisor_out)
    return apps, console, hypervisor


def _kill_vm(proc: subprocess.Popen, argv: list[str]) -> None:
    """Kill the VM. Supervised (every pod of kvmpod run): SIGTERM to the supervisor, which passes it
    on to the hypervisor (QEMU exits at once on it) and then still copies the records of the apps that
    did end out of the pod share; SIGKILL only when that takes over 10 s."""
    if hypervisor_part(argv) is not argv:
        proc.terminate()
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()


def _exit_fd(pid: int) -> list[int]:
    """A pidfd of the VM's process, readable once it has exited: the follow loop wakes at once then
    instead of at its next poll (up to POLL_SECONDS later, on every pod's end; issue 20). In a list
    for select(); empty where the kernel has no pidfd_open (before 5.3): the poll still notices."""
    try:
        return [os.pidfd_open(pid)]
    except OSError:
        return []


def _note_state(pod: PodDir, **changes: object) -> None:
    """state.json while the pod runs: a full disk must not stop kvmpod from following its VM."""
    try:
        write_state(pod, **changes)
    except OSError:
        pass


def boot_and_follow(pod: PodDir, argv: list[str], lock_fd: int, register: Callable[[int], str] | None, out,
                    err) -> tuple[int | None, bool]:
    """Run the VM to its end; (hypervisor's exit status or None when killed by kvmpod, interrupted)."""
    progress = Progress(err)
    started = time.monotonic()
    first_line_at = None
    read_end, write_end = os.pipe()
    exited: list[int] = []
    relay = EnterRelay(pod.enter_port, pod.enter_socket) if pod.enter_port in "\n".join(argv) else None
    sources: list[LogSource] = []
    try:
        with _Signals() as signals:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                                        start_new_session=True, pass_fds=(lock_fd,), preexec_fn=die_with_parent)
            finally:
                os.close(write_end)
            exited = _exit_fd(proc.pid)
            app_output, console, hypervisor = _log_sources(pod, argv, read_end)
            if relay is not None:
                relay.start()
            _note_state(pod, state="running", hypervisor_pid=proc.pid, started=time.time(),
                        enter=relay is not None)
            if register is not None:
                try:
                    write_state(pod, machine=register(proc.pid))
                except Exception as error:  # the pod runs on; only machinectl will not show it
                    err.write(f"kvmpod: warning: cannot register the pod with systemd-machined: {error}\n")
            stop_at = pressed_at = None
            manager_up = False
            interrupted = killed = pressed = False
            last_status = "starting the VM"
            sources = [s for s in (app_output, console, hypervisor) if s is not None]
            while True:
                rc = proc.poll()
                connected = all(s.connect() for s in sources)
                hypervisor.lines(final=rc is not None)
                lines = app_output.lines(final=rc is not None)
                if lines:
                    progress.clear()
                    for line in lines:
                        if first_line_at is None:
                            first_line_at = time.monotonic() - started
                            _note_state(pod, first_output_seconds=round(first_line_at, 3))
                        out.write(line + "\n")
                    out.flush()
                console_lines = console.lines(final=rc is not None) if console is not None else []
                status = boot_status(console_lines) if console is not None else None
                manager_up = manager_up or first_line_at is not None or manager_running("\n".join(console_lines))
                if status:
                    last_status = status
                if rc is not None:
                    break
                now = time.monotonic()
                if signals.received:
                    sig = signals.received.pop(0)
                    if sig == signal.SIGINT:
                        interrupted = True
                    if stop_at is not None and sig == signal.SIGINT:
                        progress.clear()
                        err.write("kvmpod: second interrupt: killing the VM\n")
                        _kill_vm(proc, argv)
                        killed = True
                    elif stop_at is None:
                        progress.clear()
                        err.write(f"kvmpod: stopping pod {pod.uuid}: the apps get SIGTERM, then the VM powers off "
                                  f"(Ctrl-C again to kill it)\n")
                        stop_at = now
                if stop_at is not None and not killed:
                    # until a press gets through, retry each second (QEMU may not have made its socket yet)
                    if pressed_at is None or now - pressed_at > (PRESS_AGAIN_SECONDS if pressed else 1.0):
                        # Ctrl-Alt-Del once systemd runs, and the power button (hypervisor/guest_stop.py)
                        pressed = ask_to_stop(pod, manager_up) is None or pressed
                        pressed_at = now
                    if now - stop_at > STOP_SECONDS:
                        err.write(f"kvmpod: the VM did not power off within {STOP_SECONDS:.0f} s: killing it\n")
                        _kill_vm(proc, argv)
                        killed = True
                if first_line_at is None and stop_at is None:
                    progress.show(f"kvmpod: booting pod {pod.uuid[:8]} {now - started:5.1f} s  {last_status}")
                # until QEMU's sockets are connected, look again soon: what comes before is lost
                ready: list = [s for s in sources if s.fileno() is not None and not s.ended]
                select.select(ready + exited, [], [], POLL_SECONDS if connected else CONNECT_POLL_SECONDS)
            progress.clear()
    finally:
        for fd in exited:
            os.close(fd)
        if relay is not None:
            relay.stop()
            relay.join(timeout=5)
        if not sources:
            os.close(read_end)
        for source in sources:
            source.close()
            source.log.close()
            if source.log.dropped:  # the disk filled up while the pod ran (pods/capped_log.py)
                err.write(f"kvmpod: {source.log.dropped} bytes not written to {source.log.path}: "
                          f"{source.log.error.strerror or source.log.error}\n")
    return (None if killed else rc), interrupted


# ---------------------------------------------------------------- the whole run

def _tail(path: str, limit: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""
    return " ".join(text.split())


def disk_full(error: BaseException) -> bool:
    """ENOSPC or EDQUOT, raised directly or reported by a tool kvmpod ran (cp, tar)."""
    import errno

    return (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        any(words in str(error) for words in ("No space left on device", "Disk quota exceeded"))


def run_pod(*, pod_model: Pod, manifest_bytes: bytes, images: dict[str, str], networks: list[dict] | None,
            pod_uuid: str, stage1: Stage1, keep: bool, argv_for: Callable[[PodDir], list[str]],
            register: Callable[[int], str] | None = None, out=sys.stdout, err=sys.stderr,
            network_up: Callable[[PodDir, Callable[[str], None]], None] | None = None,
            network_down: Callable[[PodDir], list[str]] | None = None) -> int:
    apps = [a.name for a in pod_model.apps]
    log_cap()  # a bad $KVMPOD_LOG_CAP is refused before anything is made
    base = pods_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    pod = pod_dir(pod_uuid, base)
    try:
        os.mkdir(pod.path, 0o700)
    except FileExistsError:
        raise InvalidInput([Problem("--uuid", f"pod {pod_uuid} already exists in {base}; give another UUID "
                                              f"or remove it (kvmpod gc)")]) from None
    lock_fd = hold_lock(pod)

    def say(text: str) -> None:
        err.write(f"kvmpod: {text}\n")

    def network_teardown() -> bool:
        problems = network_down(pod) if network_down is not None else []
        for problem in problems:
            say(f"warning: network teardown: {problem} (kvmpod gc tries again)")
        return not problems

    try:
        try:
            write_state(pod, uuid=pod_uuid, state="preparing", created=time.time(), apps=apps,
                        kvmpod_pid=os.getpid(), stage1=stage1.root)  # kvmpod stage1 gc keeps it
            prepare(pod, stage1, manifest_bytes, images, networks, say)
            if keep:  # a kept pod's guest journal is persistent, flushed before its apps start (pods/kept_journal.py)
                kept_journal.make_persistent(pod.rootfs)
            if network_up is not None:
                network_up(pod, say)  # taps, addresses, rules (host.net), recorded in the pod directory first
            argv = argv_for(pod)
        except BaseException as error:
            pod_root.unmount(pod)
            removed = network_teardown()
            if removed:  # else the pod stays, with its net.json, for kvmpod gc
                shutil.rmtree(pod.path, ignore_errors=True)  # nothing half-made stays behind
            if disk_full(error):
                raise RuntimeError(f"no space left on the file system of {base} while preparing pod {pod_uuid}"
                                   + ("; nothing of the pod was kept" if removed else "; kvmpod gc removes it")
                                   + ": free space there, then run the pod again") from None
            raise
        with open(os.path.join(pod.path, "argv.json"), "w") as f:
            json.dump(argv, f)
        own = hypervisor_part(argv)  # the hypervisor inside kvmpod's supervisor, when it has one
        hypervisor = own[0] + ("" if own is argv else ", supervised by kvmpod.host.hypervisor.supervisor")
        _note_state(pod, hypervisor=os.path.basename(own[0]))
        say(f"pod {pod_uuid}: booting {hypervisor} (console: {pod.console})")
        started = time.monotonic()
        rc, interrupted = boot_and_follow(pod, argv, lock_fd, register, out, err)
        seconds = time.monotonic() - started
        exits, unreadable = read_exit_records(pod, apps)  # the guest wrote them: read as untrusted data
        status = pod_exit_status(exits)
        first = first_failure(exits)
        missing = [a for a, e in exits.items() if e is None]
        summary = ", ".join(f"{a} {e.describe()}" if e else f"{a}: {unreadable.get(a, 'no record')}"
                            for a, e in exits.items())
        say(f"pod {pod_uuid} ended after {seconds:.1f} s: {summary}")
        if missing and first is None:
            lost = [a for a in missing if a not in unreadable]
            spoiled = [a for a in missing if a in unreadable]
            parts = []
            if lost:
                ended = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"hypervisor exit {rc}"
                tail = _tail(pod.hypervisor_log) if rc else ""
                parts.append(f"the VM ended ({ended}) before the guest recorded {', '.join(lost)}"
                             + (f": {tail}" if tail else ""))
            if spoiled:
                parts.append(f"the host could not read the records of {', '.join(spoiled)}")
            how = "; ".join(parts) + f"; see {pod.console}"
            say(how)
            status = EXIT_POD_BROKEN
        elif first is not None:
            how = f"app {first.app} failed first: {first.describe()}"
        elif interrupted:
            how = "interrupted"
            status = EXIT_INTERRUPTED
        else:
            clean = all(e is not None and e.exit_status == 0 for e in exits.values())
            how = "every app exited successfully" if clean else "stopped; no app failed"
        reserved_room.release(pod.path)  # the room kept for this write (pods/reserved_room.py)
        try:
            write_state(pod, state="exited", finished=time.time(), exit_status=status, how=how,
                        hypervisor_exit=rc, seconds=round(seconds, 3))
        except OSError as error:  # a full disk: the status is still this process's, said once
            say(f"cannot record the pod's end in {pod.state_file} ({error.strerror}); kvmpod list shows it "
                f"as aborted")
        return status
    finally:
        if os.path.isdir(pod.path):
            network_teardown()
        pod_root.detach(pod)  # the kernel's cleanup of the overlay finishes after kvmpod run returns
        if not keep:
            shutil.rmtree(pod.stage1, ignore_errors=True)
        for path in pod.runtime_sockets:
            try:
                os.unlink(path)
            except OSError:
                pass
        os.close(lock_fd)
