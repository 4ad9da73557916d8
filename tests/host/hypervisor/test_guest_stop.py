"""Asking a guest to stop (host.hypervisor.guest_stop) through `kvmpod stop`, against a fake QEMU whose
guest, like the stage1's (no logind) or a TCG guest still booting, does not answer the ACPI power button."""

import json
import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from helpers import UUID

from kvmpod.host import run as runner
from kvmpod.host.hypervisor import guest_stop
from kvmpod.host.pod_commands import _stop
from kvmpod.host.pods import pod_dirs as pods

# From a real pod's console.log: kernel lines, systemd's first line as PID 1 (before its manager is
# set up: Ctrl-Alt-Del would still reset the machine), then a status line of the running manager.
KERNEL = b"[    7.199761] Run /init as init process\r\nLoading, please wait...\r\n"
EARLY_SYSTEMD = b"[   32.864848] systemd[1]: Inserted module 'autofs4'\r\n"
STATUS = b"[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39msysinit.target\x1b[0m - System Initialization.\r\n"


def test_the_manager_is_seen_running_only_from_its_status_lines():
    assert not guest_stop.manager_running(KERNEL + EARLY_SYSTEMD)
    assert guest_stop.manager_running(KERNEL + EARLY_SYSTEMD + STATUS)
    assert guest_stop.manager_running((KERNEL + STATUS).decode())


class FakeQemu:
    """Serves QMP on the pod's socket; its guest ignores the power button and stops on Ctrl-Alt-Del
    (as systemd does once its manager runs): then QEMU exits, removing its socket and freeing the lock."""

    def __init__(self, pod: pods.PodDir, lock: int):
        self.pod, self.lock, self.seen = pod, lock, []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(pod.qmp)
        self.server.listen()
        self.server.settimeout(0.5)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn, conn.makefile("rwb") as f:
                f.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
                f.flush()
                for line in f:
                    request = json.loads(line)
                    if request["execute"] != "qmp_capabilities":
                        self.seen.append((request["execute"], request.get("arguments")))
                    f.write(b'{"return": {}}\r\n')
                    f.flush()
                    if request["execute"] == "send-key":
                        os.unlink(self.pod.qmp)
                        os.close(self.lock)
                        self.done.set()
                        return

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def pod(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pods, "QMP_DIR", tempfile.mkdtemp(prefix="kvmpod-qmp-", dir="/tmp"))
    monkeypatch.setenv(pods.PODS_ENV, str(tmp_path / "pods"))
    monkeypatch.setattr(runner, "PRESS_AGAIN_SECONDS", 0.3)
    pod = pods.pod_dir(UUID, str(tmp_path / "pods"))
    os.makedirs(pod.exits)
    pods.write_state(pod, uuid=UUID, apps=["a"], state="running")
    return pod


POWER = ("system_powerdown", None)
CAD = ("send-key", guest_stop.CTRL_ALT_DEL)


def test_ctrl_alt_del_is_the_first_ask_once_systemd_runs(pod):
    """The stage1 has no logind (issue 20): nothing answers the power button, so Ctrl-Alt-Del goes at
    once, not after an unanswered press (PRESS_AGAIN_SECONDS later)."""
    Path(pod.console).write_bytes(KERNEL + EARLY_SYSTEMD + STATUS)
    qemu = FakeQemu(pod, pods.hold_lock(pod))
    try:
        assert _stop(UUID, timeout=20) == 0
    finally:
        qemu.close()
    assert qemu.seen == [CAD], qemu.seen


def test_an_app_that_printed_also_shows_systemd_runs(pod):
    Path(pod.console).write_bytes(KERNEL)
    Path(pod.apps_log).write_bytes(b"[   20.1] a[190]: up\n")
    qemu = FakeQemu(pod, pods.hold_lock(pod))
    try:
        assert _stop(UUID, timeout=20) == 0
    finally:
        qemu.close()
    assert CAD in qemu.seen


def test_no_ctrl_alt_del_before_systemds_manager_runs(pod):
    """It would reset the machine at once: the guest is left to the power button, however long."""
    Path(pod.console).write_bytes(KERNEL + EARLY_SYSTEMD)
    lock = pods.hold_lock(pod)
    qemu = FakeQemu(pod, lock)
    try:
        with pytest.raises(RuntimeError, match="did not stop within 2 s"):
            _stop(UUID, timeout=2)
    finally:
        qemu.close()
        os.close(lock)
    assert qemu.seen and set(qemu.seen) == {POWER}, qemu.seen
    assert len(qemu.seen) >= 3, "pressed again while unanswered"
