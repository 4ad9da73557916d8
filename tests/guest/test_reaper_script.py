"""The reaper's ExecStop= script, run by a real shell against a stand-in systemctl."""

import os
import subprocess
from pathlib import Path

import pytest

from kvmpod.guest import lifecycle

SHOW_STARTED = ("Result=success\nExecMainCode=1\nExecMainStatus=0\nExecMainStartTimestampMonotonic=71729365\n"
                "ExecMainExitTimestampMonotonic=77416876\n")
SHOW_NEVER_STARTED = ("Result=success\nExecMainCode=0\nExecMainStatus=0\nExecMainStartTimestampMonotonic=0\n"
                      "ExecMainExitTimestampMonotonic=0\n")


def _run(tmp_path: Path, shown: str) -> tuple[str | None, list[str]]:
    """The record the script wrote for app `web` and every systemctl call it made."""
    exits = tmp_path / "apps"
    exits.mkdir()
    calls = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\ncase $1 in show) printf '%s' '{shown}';; esac\n")
    fake.chmod(0o755)
    script = lifecycle.REAPER_SCRIPT.replace(lifecycle.SYSTEMCTL, str(fake)).replace(lifecycle.EXITS_DIR, str(exits))
    subprocess.run(["/bin/sh", "-c", script, "kvmpod-reaper", "web"], check=True)
    record = exits / "web"
    assert not (exits / ".web.tmp").exists()
    return (record.read_text() if record.exists() else None), calls.read_text().splitlines()


def test_an_app_that_ran_is_recorded_with_one_systemctl_and_no_poweroff(tmp_path: Path) -> None:
    record, calls = _run(tmp_path, SHOW_STARTED)
    assert record == SHOW_STARTED
    assert len(calls) == 1 and calls[0].startswith("show -p Result") and calls[0].endswith("web.service")


@pytest.mark.parametrize("shown", [SHOW_NEVER_STARTED, ""])
def test_an_app_that_never_started_is_recorded_and_powers_the_pod_off(tmp_path: Path, shown: str) -> None:
    record, calls = _run(tmp_path, shown)
    assert record == shown or (shown == "" and record == "\n")
    assert calls[-1] == "--no-block poweroff"


def test_a_start_time_that_only_begins_with_zero_digits_is_not_read_as_started(tmp_path: Path) -> None:
    _, calls = _run(tmp_path, SHOW_NEVER_STARTED.replace("Monotonic=0\nExecMainExit", "Monotonic=\nExecMainExit"))
    assert calls[-1] == "--no-block poweroff"
