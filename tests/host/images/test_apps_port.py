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
    assert f"ExecStart=/usr/bin/stty -F {stage1.APPS_TTY} crtscts\n" in text
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
