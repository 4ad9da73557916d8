"""The stage1's apps' output port unit: CTS flow control on /dev/ttyS1 before any app starts."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmpod.host.images import apps_port, stage1


def test_install_writes_the_unit_wanted_by_sysinit(tmp_path: Path) -> None:
    apps_port.install(tmp_path)
    units = tmp_path / "etc/systemd/system"
    text = (units / apps_port.UNIT_NAME).read_text()
    assert f"ExecStartPre=/usr/bin/stty -F {stage1.APPS_TTY} crtscts\n" in text
    assert f"StandardOutput=file:{stage1.APPS_TTY}\n" in text  # held open by the unit's shell
    assert "DefaultDependencies=no\nBefore=sysinit.target\n" in text
    assert os.readlink(units / "sysinit.target.wants" / apps_port.UNIT_NAME) == f"../{apps_port.UNIT_NAME}"
    apps_port.install(tmp_path)  # again: idempotent
    assert os.readlink(units / "sysinit.target.wants" / apps_port.UNIT_NAME) == f"../{apps_port.UNIT_NAME}"


def test_the_port_is_journalds_tty() -> None:
    assert f"TTYPath={apps_port.APPS_TTY}\n" in stage1.JOURNALD_SETTINGS


@pytest.mark.skipif(not shutil.which("systemd-analyze") or not os.path.exists(apps_port.STTY),
                    reason="needs systemd-analyze and stty")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / apps_port.UNIT_NAME
    unit.write_text(apps_port.UNIT)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert apps_port.UNIT_NAME not in proc.stderr, proc.stderr


def test_the_holder_exits_on_sigterm_by_itself(tmp_path: Path) -> None:
    """Its shell ends on SIGTERM with status 0 (its own exit, whose close of the port waits for the
    port to send all), and before that holds the port open."""
    import signal
    import time

    out = tmp_path / "port"
    out.write_text("")
    with out.open("w") as port:
        proc = subprocess.Popen(["/bin/sh", "-c", apps_port.HOLD], stdout=port, start_new_session=True)
    time.sleep(0.5)
    assert proc.poll() is None
    holders = [p for p in os.listdir("/proc") if p.isdigit() and _holds(p, out)]
    assert holders == [str(proc.pid)], holders  # the shell only: its sleep's stdout is /dev/null
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    os.killpg(proc.pid, signal.SIGKILL)  # the sleep it left (systemd's stop kills the unit's cgroup)


def _holds(pid: str, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
