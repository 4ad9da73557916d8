"""On a systemd host, `kvmpod run` runs as the transient service `kvmpod-<uuid>.service` in machine.slice,
registered with systemd-machined as the machine `kvmpod-<uuid>` (class vm), as systemd-nspawn's
units are. That makes every way systemd has to stop a machine stop the pod as `kvmpod stop` does:

- `systemctl stop kvmpod-<uuid>.service` and `machinectl terminate kvmpod-<uuid>` (machined stops the
  machine's unit) send SIGTERM to the unit's main process only (KillMode=mixed): kvmpod run presses
  the VM's ACPI power button, the guest stops its apps and powers off, the apps' ends are recorded,
  and the unit ends; SIGKILL for everything left only after TimeoutStopSec;
- `machinectl poweroff kvmpod-<uuid>` sends SIGRTMIN+4 to the machine's leader, kvmpod run, which
  takes it as the same stop.

`kvmpod run` typed at a terminal checks its input, then starts the unit with its own command line,
working directory, kvmpod's environment variables and its terminal as the unit's stdin/stdout/stderr
(StandardInputFileDescriptor=...), and waits for it: a Ctrl-C (SIGINT), SIGTERM or SIGHUP is passed
to the unit's main process, and the unit's exit status is kvmpod run's. The unit's kvmpod run sees
RUN_UNIT_ENV and registers itself (RegisterMachine, leader: its own pid) instead of starting
another unit.
"""

import os
import signal
import sys
import time

RUN_UNIT_ENV = "KVMPOD_RUN_UNIT"
MACHINE_SLICE = "machine.slice"
POLL_SECONDS = 0.2
PASSED_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TERM")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CODES_KILLED = (2, 3)


def run_unit_name(pod_uuid: str) -> str:
    return f"kvmpod-{pod_uuid}.service"


def unit_environment(environ: dict[str, str], unit: str) -> list[bytes]:
    """kvmpod's own variables and the few a Python program needs; RUN_UNIT_ENV set to the unit."""
    names = sorted(n for n in environ if n.startswith("KVMPOD_") or n in PASSED_ENV)
    return [os.fsencode(f"{n}={environ[n]}") for n in names if n != RUN_UNIT_ENV] + \
        [os.fsencode(f"{RUN_UNIT_ENV}={unit}")]


def unit_properties(argv: list[str], unit: str, cwd: str, environ: dict[str, str], fds: tuple[int, int, int],
                    stop_seconds: float) -> dict[bytes, object]:
    encoded = [os.fsencode(a) for a in argv]
    return {
        b"Description": os.fsencode(f"kvmpod pod {unit[len('kvmpod-'):-len('.service')]}"),
        b"ExecStart": [(encoded[0], encoded, False)],
        b"Slice": MACHINE_SLICE.encode(),
        b"KillMode": b"mixed",  # SIGTERM to kvmpod run only: it powers the VM off cleanly
        b"TimeoutStopUSec": int(stop_seconds * 1_000_000),
        b"WorkingDirectory": os.fsencode(cwd),
        b"Environment": unit_environment(environ, unit),
        b"StandardInputFileDescriptor": fds[0],
        b"StandardOutputFileDescriptor": fds[1],
        b"StandardErrorFileDescriptor": fds[2],
        b"CollectMode": b"inactive-or-failed",
        b"_custom": (b"AddRef", b"b", True),  # stays loaded until we read its end, then goes
    }


def run_in_unit(argv: list[str], pod_uuid: str, stop_seconds: float, err=sys.stderr) -> int:
    """Start argv as the pod's unit with our stdio, pass stop signals on, return its exit status."""
    try:
        from pystemd.dbuslib import DBus
        from pystemd.systemd1 import Manager, Unit
    except ImportError:
        raise RuntimeError("this host runs systemd but pystemd is not installed; install python3-pystemd (apt) "
                           "or kvmpod[systemd] (pip), or pass --no-systemd") from None
    unit = run_unit_name(pod_uuid)
    fds = tuple(os.dup(fd) for fd in (0, 1, 2))  # fd 0 would read as "none" to pystemd
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in FORWARDED}
    try:
        with DBus() as bus:  # one connection for the whole run: the unit's AddRef= is this connection's
            manager = Manager(bus=bus, _autoload=True)
            try:
                manager.Manager.StartTransientUnit(unit.encode(), b"fail", unit_properties(
                    argv, unit, os.getcwd(), dict(os.environ), fds, stop_seconds))
            except Exception as error:
                if "already exists" in str(error) or "AlreadyExists" in str(error):
                    from ...pod.problems import InvalidInput, Problem

                    raise InvalidInput([Problem("--uuid", f"pod {pod_uuid} is already running (unit {unit})")]) \
                        from None
                raise RuntimeError(f"cannot start {unit} in {MACHINE_SLICE}: {error}") from None
            for fd in fds:
                os.close(fd)
            fds = ()
            watched = Unit(unit.encode(), bus=bus, _autoload=True)
            while True:
                while received:
                    try:
                        manager.Manager.KillUnit(unit.encode(), b"main", received.pop(0))
                    except Exception:
                        pass
                state = watched.Unit.ActiveState
                if state in (b"inactive", b"failed"):
                    code, status = int(watched.Service.ExecMainCode), int(watched.Service.ExecMainStatus)
                    try:
                        manager.Manager.ResetFailedUnit(unit.encode())
                    except Exception:
                        pass
                    return 128 + status if code in _CODES_KILLED else status
                time.sleep(POLL_SECONDS)
    finally:
        for fd in fds:
            os.close(fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
