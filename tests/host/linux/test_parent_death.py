"""A child started with die_with_parent dies with its parent (host/linux/parent_death.py), the one
preexec_fn of the VM, virtiofsd and the roots' copies."""

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from kvmpod.host.linux import parent_death
from kvmpod.host.linux.parent_death import die_with_parent

# The child reads its own parent-death signal back (PR_GET_PDEATHSIG = 2).
READ_BACK = ("import ctypes; v = ctypes.c_int(-1); "
             "assert ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0) == 0; print(v.value)")

# A parent that starts `sleep 60` (with or without die_with_parent), says its pid, and waits.
PARENT = """
import subprocess, sys, time
from kvmpod.host.linux.parent_death import die_with_parent
child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent if sys.argv[1] == "yes" else None)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_the_child_gets_sigkill_as_its_parent_death_signal():
    with_it = subprocess.run([sys.executable, "-c", READ_BACK], capture_output=True, text=True, check=True,
                             preexec_fn=die_with_parent)
    without = subprocess.run([sys.executable, "-c", READ_BACK], capture_output=True, text=True, check=True)
    assert (with_it.stdout, without.stdout) == (f"{int(signal.SIGKILL)}\n", "0\n")


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # dead, waiting for a reaper
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("given", ["yes", "no"])
def test_a_parent_killed_by_sigkill_takes_the_child_along(given):
    """SIGKILL: no handler of the parent runs, only the kernel can end the child. The negative
    control (no die_with_parent) shows the child would otherwise go on."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, given], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        assert _gone(child, 10 if given == "yes" else 1) == (given == "yes")
    finally:
        if not _gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_a_prctl_that_fails_stops_the_program_from_running(monkeypatch, tmp_path):
    class FailingLibc:
        def prctl(self, *args):
            ctypes.set_errno(22)
            return -1

    monkeypatch.setattr(parent_death, "libc", FailingLibc)
    with pytest.raises(OSError, match=r"prctl\(PR_SET_PDEATHSIG\): Invalid argument"):
        die_with_parent()
    marker = tmp_path / "ran"
    with pytest.raises(subprocess.SubprocessError):  # as a preexec_fn: the program is never run
        subprocess.run(["touch", str(marker)], preexec_fn=die_with_parent)
    assert not marker.exists()
