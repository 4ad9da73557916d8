"""The pod's launched command when its volumes need host-side work:

    python3 -m kvmpod.host.hypervisor.supervisor [--home DIR] [--mount OPTS SRC DEST]... \
        [--virtiofsd BINARY SOCKET SOURCE]... [--pod-share DIR BYTES] -- HYPERVISOR ARGV...

It enters a mount namespace of its own (unshare(CLONE_NEWNS), mounts marked slave so host mounts
still propagate in but none of ours propagates out), mounts a tmpfs on volume_staging.STAGING_DIR,
makes the staged binds there (`bind`/`rbind`, `,ro` made read-only on every submount too), starts
one virtiofsd per `--virtiofsd`, waits for their sockets, then runs the hypervisor as its child,
passing on SIGTERM/SIGINT/SIGHUP, and exits with the hypervisor's status after stopping the
daemons. Every child gets PR_SET_PDEATHSIG=SIGKILL: if the supervisor is killed, they die with it,
and with the last of them the namespace and every staged mount are gone. Nothing is ever mounted in
the host's namespace, so nothing can be left there.

With `--pod-share DIR BYTES` (every pod of `kvmpod run`), the pod share (<pod>/share, which the
guest writes its apps' ends into) is, inside that namespace, a tmpfs of BYTES bytes and
POD_SHARE_INODES inodes (nosuid, nodev, noexec) mounted over DIR: whatever the guest writes there
(root in the guest can write anything) stays in memory the size of the cap and is gone with the
namespace. When the hypervisor has exited, the supervisor copies the apps' records (regular files of
at most 4 KiB in apps/, read as untrusted data: host.pods.share_reader) into the host's DIR/apps
underneath, where kvmpod reads them. A supervisor killed before that leaves no record (the pod then
ends with status 1, "before the guest recorded ...").

`kvmpod args`/`run` produce this command (argv.build_argv), so both run paths (transient unit and
child) get the same staging. Errors: one line on stderr, exit 2, before the hypervisor starts.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from ..linux.libc import check as _check, libc as _libc
from ..linux.parent_death import die_with_parent
from ..pods import reserved_room
from ..pods.share_reader import MAX_RECORD_BYTES, REFUSED, is_component, open_dir_below, read_regular_at
from .virtiofs import virtiofsd_argv
from .volume_staging import STAGING_DIR, Export

EXIT_SETUP = 2
SOCKET_WAIT_SECONDS = 20.0

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 1, 2, 4, 32, 4096, 16384, 1 << 19
MS_NOEXEC = 8
POD_SHARE_INODES = 256  # the share holds one record per app (a pod has a few apps) and their temp files
MAX_COPIED_RECORDS = 1024  # entries of apps/ looked at when copying out
MAX_REFUSED = 64


def supervisor_argv(python: str, exports: tuple[Export, ...], hypervisor_argv: Sequence[str], *,
                    virtiofsd: str | None = None, home: str | None = None,
                    pod_share: tuple[str, int] | None = None) -> list[str]:
    """The self-contained launched command: binds and daemons as arguments, then the hypervisor."""
    argv = [python, "-m", "kvmpod.host.hypervisor.supervisor"]
    if home is not None:
        argv += ["--home", home]
    if pod_share is not None:
        argv += ["--pod-share", pod_share[0], str(pod_share[1])]
    for e in exports:
        if e.bind_options is not None:
            argv += ["--mount", e.bind_options, e.source, e.path]
    if virtiofsd is not None:
        for e in exports:
            argv += ["--virtiofsd", virtiofsd, e.socket, e.path]
    return argv + ["--", *hypervisor_argv]


# ---------------------------------------------------------------- the edge: syscalls

def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda v: None if v is None else os.fsencode(v))
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           f"mount {source or ''} on {target}")


def _submounts(target: str) -> list[str]:
    """Mount points at or under target in this namespace (from /proc/self/mountinfo)."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = line.split(" ")[4]
            point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            if point == target or point.startswith(target + "/"):
                points.append(point)
    return points


def enter_private_namespace(libc) -> None:
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Slave: the host's later mounts still show here, ours never show there.
    _mount(libc, None, "/", None, MS_REC | MS_SLAVE)
    os.makedirs(STAGING_DIR, mode=0o700, exist_ok=True)
    _mount(libc, "kvmpod-staging", STAGING_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")


def mount_pod_share(libc, directory: str, size: int) -> int:
    """The size-capped tmpfs over the pod share (see the module's docstring); returns a descriptor of
    the host's directory underneath, which the records are copied into at the end."""
    host_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _mount(libc, "kvmpod-pod-share", directory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               f"size={size},nr_inodes={POD_SHARE_INODES},mode=0755")
        os.mkdir(os.path.join(directory, "apps"), 0o755)
    except BaseException:
        os.close(host_fd)
        raise
    return host_fd


def copy_out_records(directory: str, host_fd: int) -> list[str]:
    """The apps' records from the tmpfs share into the host's share/apps (host_fd: the host's share
    directory): regular files of at most MAX_RECORD_BYTES, names of one component not starting with
    a dot (the reapers' temporary files), created exclusively without following links. Returns the
    names copied; anything else the guest left is dropped with the tmpfs. What was not copied, and
    why (a link, a FIFO, too large), goes to the host's share/REFUSED (at most MAX_REFUSED names),
    so kvmpod says it of the pod's apps instead of "no record", and to stderr in one line."""
    copied: list[str] = []
    refused: dict[str, str] = {}
    try:
        return _copy_out(directory, host_fd, copied, refused)
    finally:
        if refused:
            _write_refused(host_fd, refused)


def _write_refused(host_fd: int, refused: dict[str, str]) -> None:
    import json

    names = sorted(refused)[:MAX_REFUSED]
    sys.stderr.write("kvmpod-supervisor: not copied out of the pod share: "
                     + "; ".join(f"apps/{n!r:.80} {refused[n]}" for n in names[:8])
                     + (f"; and {len(refused) - 8} more" if len(refused) > 8 else "") + "\n")
    try:
        fd = os.open(REFUSED, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=host_fd)
        with os.fdopen(fd, "w") as f:
            json.dump({n: refused[n][:200] for n in names}, f)
    except OSError:
        pass  # a full disk: the line above still says it


def _copy_out(directory: str, host_fd: int, copied: list[str], refused: dict[str, str]) -> list[str]:
    try:
        source = open_dir_below(directory, ("apps",))
    except OSError:
        return copied
    try:
        os.mkdir("apps", 0o755, dir_fd=host_fd)
    except FileExistsError:
        pass
    try:
        target = os.open("apps", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=host_fd)
    except OSError:
        os.close(source)
        return copied
    try:
        with os.scandir(source) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_COPIED_RECORDS:
                    break
                name = entry.name
                if not is_component(name) or name.startswith("."):
                    continue
                record = read_regular_at(source, name, MAX_RECORD_BYTES)
                if record.data is None:
                    if record.problem is not None:
                        refused[name] = record.problem
                    continue
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                                 dir_fd=target)
                except OSError:
                    continue
                with os.fdopen(fd, "wb") as f:
                    f.write(record.data)
                copied.append(name)
    finally:
        os.close(source)
        os.close(target)
    return copied


def stage_bind(libc, options: str, source: str, dest: str) -> None:
    words = options.split(",")
    os.mkdir(dest, 0o700)
    _mount(libc, source, dest, None, MS_BIND | (MS_REC if "rbind" in words else 0))
    if "ro" in words:
        # A bind's ro is per mount: make every mount of the staged tree read-only, deepest last.
        for point in _submounts(dest):
            _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _parse(argv: list[str]) -> tuple[str | None, list[tuple[str, str, str]], list[tuple[str, str, str]],
                                    tuple[str, int] | None, list[str]]:
    if "--" not in argv:
        raise ValueError("usage: python3 -m kvmpod.host.hypervisor.supervisor [OPTIONS] -- HYPERVISOR ARGV...")
    split = argv.index("--")
    options, hypervisor = argv[:split], argv[split + 1:]
    home, mounts, daemons, share = None, [], [], None
    i = 0
    while i < len(options):
        word = options[i]
        if word == "--home" and i + 1 < len(options):
            home, i = options[i + 1], i + 2
        elif word == "--pod-share" and i + 2 < len(options) and options[i + 2].isdigit():
            share, i = (options[i + 1], int(options[i + 2])), i + 3
        elif word in ("--mount", "--virtiofsd") and i + 3 < len(options):
            (mounts if word == "--mount" else daemons).append(tuple(options[i + 1:i + 4]))
            i += 4
        else:
            raise ValueError(f"unknown or incomplete option {word!r}")
    if not hypervisor:
        raise ValueError("no hypervisor command after --")
    return home, mounts, daemons, share, hypervisor


def _wait_for_sockets(daemons: list[subprocess.Popen], sockets: list[str]) -> None:
    deadline = time.monotonic() + SOCKET_WAIT_SECONDS
    while not all(os.path.exists(s) for s in sockets):
        for proc, sock in zip(daemons, sockets):
            if proc.poll() is not None:
                raise RuntimeError(f"virtiofsd for {sock} exited {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"virtiofsd did not create {', '.join(s for s in sockets if not os.path.exists(s))} "
                               f"within {SOCKET_WAIT_SECONDS:.0f} s")
        time.sleep(0.05)


def _stop(daemons: list[subprocess.Popen]) -> None:
    for proc in daemons:
        if proc.poll() is None:
            proc.terminate()
    for proc in daemons:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DAEMON_GRACE_SECONDS = 3.0  # a virtiofsd ends when QEMU disconnects, i.e. as QEMU itself ends


def _wait(proc: subprocess.Popen, daemons: list[subprocess.Popen], sockets: list[str]) -> int:
    """The hypervisor's status. A virtiofsd that dies while the VM runs (killed, crashed) leaves the
    guest's volume dead under its apps: unless the hypervisor ends by itself within the grace time,
    the VM is stopped (SIGTERM: QEMU exits at once), with one line saying why."""
    if not daemons:
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        dead = [(d, s) for d, s in zip(daemons, sockets) if d.poll() is not None]
        if not dead:
            continue
        try:
            return proc.wait(timeout=DAEMON_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            daemon, socket = dead[0]
            sys.stderr.write(f"kvmpod-supervisor: virtiofsd for {socket} exited {daemon.returncode} while the VM ran: "
                             "stopping the VM (its volume is gone)\n")
            sys.stderr.flush()
            proc.terminate()
            return proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    daemons: list[subprocess.Popen] = []
    children: list[subprocess.Popen] = []
    share, share_fd = None, -1
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if children:
            children[0].send_signal(signum)
        else:
            pending.append(signum)  # the hypervisor gets it as soon as it exists

    # Installed first: a stop that comes while the namespace is being set up is not lost.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        home, mounts, virtiofsds, share, hypervisor = _parse(args)
        env = dict(os.environ)
        if home is not None:
            os.makedirs(home, mode=0o700, exist_ok=True)
            env["HOME"] = home
        if mounts or virtiofsds or share:
            libc = _libc()
            enter_private_namespace(libc)
            for options, source, dest in mounts:
                stage_bind(libc, options, source, dest)
            if share is not None:
                share_fd = mount_pod_share(libc, *share)
        for binary, socket, source in virtiofsds:
            daemons.append(subprocess.Popen(virtiofsd_argv(binary, socket, source), stdin=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent))
        _wait_for_sockets(daemons, [socket for _, socket, _ in virtiofsds])
        proc = subprocess.Popen(hypervisor, env=env, preexec_fn=die_with_parent)
        children.append(proc)
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as error:
        _stop(daemons)
        sys.stderr.write(f"kvmpod-supervisor: {' '.join(str(error).split())}\n")
        return EXIT_SETUP

    for signum in pending:
        proc.send_signal(signum)
    try:
        status = _wait(proc, daemons, [socket for _, socket, _ in virtiofsds])
    finally:
        _stop(daemons)
        if share is not None:
            reserved_room.release(dir_fd=share_fd)  # kvmpod run's room for the records, should the disk be full
            copy_out_records(share[0], share_fd)
            os.close(share_fd)
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
