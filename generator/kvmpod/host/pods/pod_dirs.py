"""Pod directories on the host, one per pod UUID, as rkt kept /var/lib/rkt/pods/run/<uuid>.

    <pods>/<uuid>/          <pods> is $KVMPOD_PODS_DIR, else <state>/pods; <state> is kvmpod --dir,
                            else $KVMPOD_DIR, else /var/lib/kvmpod
      pod.json              the pod manifest as given
      state.json            what kvmpod run last recorded: state, times, the pod's exit status
      lock                  flock()ed by kvmpod run and inherited by its hypervisor: held = running
      stage1/rootfs/        the guest's 9p root: an overlay of the cached stage1 root, mounted only in
                            kvmpod run's own mount namespace (pods.pod_root), else a copy
      stage1/upper/, work/  the overlay's upper dir (the pod's own files and journal) and work dir;
      stage1/apps/<app>/upper/, work/   likewise for an app from the image store, whose rootfs is an
                            overlay of the stored image (pods.app_root);
                            stage1/ is removed when the pod ends unless kvmpod run --keep
      share/apps/<app>      the pod share (9p tag kvmpod_pod): each app's end, written by the guest
      apps.log              the apps' output as the guest sent it ("[  12.3] app[42]: line"),
                            written by kvmpod run, at most LOG_CAP bytes (older output: apps.log.1)
      console.log           likewise capped (console.log.1)
      hypervisor.log        the hypervisor's own stdout and stderr, likewise capped
    /run/kvmpod/<uuid>.qmp  QEMU's QMP socket (kvmpod stop, Ctrl-C: the ACPI power button); not in the
                            pod directory because a socket path must fit 108 bytes
    /run/kvmpod/<uuid>.apps, .console   QEMU's apps' output port and console (socket chardevs read
                            by kvmpod run, which writes the capped logs: host.pods.capped_log)
    /run/kvmpod/<uuid>.vport            QEMU's virtio-serial port kvmpod.enter (kvmpod run's relay
                            holds it: host.pods.enter_relay)
    /run/kvmpod/<uuid>.enter            the relay's socket for `kvmpod enter`

Everything the host reads from the share was written by the guest: it is opened without following
symlinks, size-capped and parsed as data.
"""

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

STATE_ENV = "KVMPOD_DIR"  # rkt's --dir: everything kvmpod keeps (pods/, images/), `kvmpod --dir DIR` sets it
DEFAULT_STATE_DIR = "/var/lib/kvmpod"
PODS_ENV = "KVMPOD_PODS_DIR"  # the pods alone, elsewhere (kept from before KVMPOD_DIR)
DEFAULT_PODS_DIR = "/var/lib/kvmpod/pods"
# What `--dir` overrides: an explicit flag beats the environment.
SUBDIR_ENVS = (PODS_ENV, "KVMPOD_IMAGES_DIR")
QMP_DIR = "/run/kvmpod"
POD_SHARE_TAG = "kvmpod_pod"  # "_" is not allowed in an AC Name: no volume's tag can be this
MAX_RECORD_BYTES = 4096

# systemd's ExecMainCode is a waitid() si_code: CLD_EXITED, CLD_KILLED, CLD_DUMPED.
_CODES = {"1": "exited", "2": "killed", "3": "dumped"}


def state_dir() -> str:
    return os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR


def pods_dir() -> str:
    return os.environ.get(PODS_ENV) or os.path.join(state_dir(), "pods")


def use_state_dir(path: str) -> str:
    """`kvmpod --dir PATH`: PATH (absolute) becomes KVMPOD_DIR for this process and its children, and
    wins over KVMPOD_PODS_DIR/KVMPOD_IMAGES_DIR. ValueError naming what is wrong with it."""
    if not path or any(c in path for c in "\0\n"):
        raise ValueError("give a directory path (no NUL or line break)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path!r} exists and is not a directory")
    os.environ[STATE_ENV] = os.path.abspath(path)
    for name in SUBDIR_ENVS:
        os.environ.pop(name, None)
    return os.environ[STATE_ENV]


@dataclass(frozen=True)
class PodDir:
    """The paths of one pod directory (see the module's docstring)."""

    path: str

    @property
    def uuid(self) -> str:
        return os.path.basename(self.path)

    def _in(self, name: str) -> str:
        return os.path.join(self.path, name)

    manifest = property(lambda self: self._in("pod.json"))
    state_file = property(lambda self: self._in("state.json"))
    lock = property(lambda self: self._in("lock"))
    stage1 = property(lambda self: self._in("stage1"))
    rootfs = property(lambda self: self._in("stage1/rootfs"))
    share = property(lambda self: self._in("share"))
    exits = property(lambda self: self._in("share/apps"))
    console = property(lambda self: self._in("console.log"))
    apps_log = property(lambda self: self._in("apps.log"))
    hypervisor_log = property(lambda self: self._in("hypervisor.log"))
    qmp = property(lambda self: os.path.join(QMP_DIR, f"{self.uuid}.qmp"))
    apps_socket = property(lambda self: os.path.join(QMP_DIR, f"{self.uuid}.apps"))
    console_socket = property(lambda self: os.path.join(QMP_DIR, f"{self.uuid}.console"))
    enter_port = property(lambda self: os.path.join(QMP_DIR, f"{self.uuid}.vport"))
    enter_socket = property(lambda self: os.path.join(QMP_DIR, f"{self.uuid}.enter"))

    @property
    def runtime_sockets(self) -> tuple[str, ...]:
        """What QEMU and kvmpod run make in /run/kvmpod for this pod (removed when it ends)."""
        return (self.qmp, self.apps_socket, self.console_socket, self.enter_port, self.enter_socket)


def pod_dir(uuid: str, base: str | None = None) -> PodDir:
    return PodDir(os.path.join(base or pods_dir(), uuid))


# ---------------------------------------------------------------- state

def write_state(pod: PodDir, **changes: object) -> dict:
    """Merge `changes` into state.json (written under a temporary name, then renamed)."""
    state = read_state(pod)
    state.update(changes)
    tmp = pod.state_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, pod.state_file)
    return state


def read_state(pod: PodDir) -> dict:
    try:
        with open(pod.state_file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def hold_lock(pod: PodDir) -> int:
    """Take the pod's lock for this process (and the hypervisor it starts); return the fd."""
    fd = os.open(pod.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def is_running(pod: PodDir) -> bool:
    """True while kvmpod run or the pod's hypervisor holds the lock."""
    try:
        fd = os.open(pod.lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def pod_state(pod: PodDir) -> str:
    """running, exited, or aborted (kvmpod run and its hypervisor died before recording an end)."""
    if is_running(pod):
        return "running"
    recorded = read_state(pod).get("state")
    return "exited" if recorded == "exited" else "aborted"


# ---------------------------------------------------------------- apps' ends, from the guest

@dataclass(frozen=True)
class AppExit:
    app: str
    result: str  # systemd's Result=: success, exit-code, signal, core-dump, ...
    code: str  # exited, killed, dumped; "" when it never started
    status: int  # the exit status, or the signal number when killed
    started: bool
    exited_at_us: int  # guest monotonic time of the exit (0: unknown)

    @property
    def failed(self) -> bool:
        return not self.started or self.result != "success"

    @property
    def exit_status(self) -> int:
        """As a shell reports it: the status, 128+N for a signal, 1 for an app that never started."""
        if not self.started:
            return 1
        return self.status if self.code == "exited" else 128 + self.status

    def describe(self) -> str:
        if not self.started:
            return "did not start (a unit it requires failed)"
        if self.code == "exited":
            return f"exited {self.status}" + ("" if self.result == "success" else " (failed)")
        return f"killed by signal {self.status}" + ("" if self.result == "success" else " (failed)")


_RESULT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz-")
_MAX_MONOTONIC_US = 2**63 - 1


def exit_problem(text: str) -> str | None:
    """Why a record cannot be an end systemd recorded (the guest wrote it: anything is possible)."""
    if "\0" in text:
        return "holds a NUL byte"
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    result = fields.get("Result", "")
    if not result or len(result) > 32 or not _RESULT_CHARS.issuperset(result):
        return f"has no valid Result= ({result[:40]!r})"
    code = fields.get("ExecMainCode", "0") or "0"
    if code not in ("0", *_CODES):
        return f"has an ExecMainCode= systemd never writes ({code[:40]!r})"
    status = fields.get("ExecMainStatus") or "0"
    if not (status.isascii() and status.isdigit()) or len(status) > 3 or int(status) > 255 \
            or (_CODES.get(code) in ("killed", "dumped") and not 1 <= int(status) <= 64):
        return f"has an ExecMainStatus= out of range ({status[:40]!r})"
    for key in ("ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic"):
        value = fields.get(key) or "0"
        if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > _MAX_MONOTONIC_US:
            return f"has a {key}= out of range ({value[:40]!r})"
    return None


def parse_exit(app: str, text: str) -> AppExit | None:
    """The app's end from its record (`systemctl show` output); None when it is not a valid one."""
    if exit_problem(text) is not None:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    # Written by kvmpod-ended-<app>.service (guest.lifecycle.RECORD_SCRIPT): no start time, and an
    # ExecMainCode only when its main process ran. By kvmpod-failed-<app> or its reaper (`systemctl show`): both.
    started = (int(fields.get("ExecMainStartTimestampMonotonic") or 0) > 0
               or fields.get("ExecMainCode", "") in _CODES)
    return AppExit(app=app, result=fields["Result"], code=_CODES.get(fields.get("ExecMainCode", ""), ""),
                   status=int(fields.get("ExecMainStatus") or 0), started=started,
                   exited_at_us=int(fields.get("ExecMainExitTimestampMonotonic") or 0))


def read_exit_records(pod: PodDir, apps: list[str]) -> tuple[dict[str, AppExit | None], dict[str, str]]:
    """Each app's end as the guest recorded it (None: no valid record), and for each app whose record
    exists but could not be read or is not valid, why. Read as untrusted data (host.pods.share_reader):
    never following a link, regular files only, at most MAX_RECORD_BYTES each, only the pod's apps."""
    from .share_reader import read_records

    exits: dict[str, AppExit | None] = {}
    problems: dict[str, str] = {}
    records = read_records(pod.path, ("share", "apps"), apps, MAX_RECORD_BYTES)
    refused = _refused_records(pod, apps)
    for app in apps:
        record = records[app]
        # An empty record is none: the guest writes each with one write(2), so an empty one is a VM
        # gone between the file's creation and that write (guest/lifecycle.py, RECORD_SCRIPT).
        data = record.data or None
        exits[app] = None
        if record.problem is not None:
            problems[app] = f"its record {record.problem}"
        elif data is None and app in refused:
            problems[app] = f"its record {refused[app]} (not copied out of the pod share)"
        elif data is not None:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                problems[app] = "its record is not UTF-8"
                continue
            problem = exit_problem(text)
            if problem is not None:
                problems[app] = f"its record {problem}"
            else:
                exits[app] = parse_exit(app, text)
    return exits, problems


def _refused_records(pod: PodDir, apps: list[str]) -> dict[str, str]:
    """What the supervisor said of the records it did not copy out of the capped share (share/refused.json,
    written by the host; read with the same care all the same): the pod's apps only, short strings."""
    from .share_reader import REFUSED, read_records

    data = read_records(pod.path, ("share",), [REFUSED], 64 * 1024)[REFUSED].data
    try:
        found = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {a: " ".join(found[a].split())[:200] for a in apps if isinstance(found.get(a), str)}


def read_exits(pod: PodDir, apps: list[str]) -> dict[str, AppExit | None]:
    """Each app's end as the guest recorded it; None for an app with no (valid, readable) record."""
    return read_exit_records(pod, apps)[0]


def first_failure(exits: dict[str, AppExit | None]) -> AppExit | None:
    """The app that failed first (by its exit time in the guest; never-started ones last)."""
    failed = [e for e in exits.values() if e is not None and e.failed]
    failed.sort(key=lambda e: (not e.started, e.exited_at_us or 2**63, e.app))
    return failed[0] if failed else None


def pod_exit_status(exits: dict[str, AppExit | None]) -> int:
    """rkt's rule: the status of the first app that failed, else 0. A failed app whose main process
    exited 0 (its post-stop handler failed: Result=exit-code, ExecMainStatus=0) fails the pod with 1."""
    first = first_failure(exits)
    if first is None:
        return 0
    return first.exit_status if first.exit_status != 0 else 1


# ---------------------------------------------------------------- listing and garbage collection

def list_pods(base: str | None = None) -> list[PodDir]:
    base = base or pods_dir()
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    return [PodDir(os.path.join(base, n)) for n in names
            if os.path.isdir(os.path.join(base, n)) and not os.path.islink(os.path.join(base, n))]


def manifest_apps(pod: PodDir) -> list[str]:
    try:
        with open(pod.manifest) as f:
            data = json.load(f)
        return [a["name"] for a in data.get("apps", []) if isinstance(a, dict) and isinstance(a.get("name"), str)]
    except (OSError, ValueError, AttributeError, KeyError):
        return []


def gc(older_than: float, now: float | None = None, base: str | None = None,
       before_remove: Callable[[PodDir], bool] | None = None) -> tuple[list[str], list[str]]:
    """Remove pods that are not running and ended (or were last touched) over `older_than` seconds ago.
    `before_remove` undoes what a pod left outside its directory (its networks); when it returns False
    (it could not, and said why) the pod is kept for the next gc. Returns (removed, kept running)."""
    now = time.time() if now is None else now
    removed, running = [], []
    for pod in list_pods(base):
        if is_running(pod):
            running.append(pod.uuid)
            continue
        state = read_state(pod)
        ended = state.get("finished") or state.get("created")
        if not isinstance(ended, (int, float)):
            ended = os.stat(pod.path).st_mtime
        if now - ended < older_than:
            continue
        # Take the lock ourselves so a kvmpod run starting on this UUID right now cannot race us.
        try:
            fd = hold_lock(pod)
        except BlockingIOError:
            running.append(pod.uuid)
            continue
        try:
            if before_remove is not None and not before_remove(pod):
                continue
            shutil.rmtree(pod.path)
            for path in pod.runtime_sockets:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
        removed.append(pod.uuid)
    return removed, running


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `2h`, `7d` as seconds; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    value = float(number)
    if value < 0 or value != value:
        raise ValueError(text)
    return value * units[unit]
