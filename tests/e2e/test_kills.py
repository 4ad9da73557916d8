"""Issue 22: kills at bad moments with the real stage1 and QEMU, without a whole boot.

- the supervisor SIGKILLed while its VM starts (QEMU a few seconds in): QEMU dies with it
  (PR_SET_PDEATHSIG), `kvmpod run` exits 1 with one clear line, nothing of the pod runs or is mounted
  in any namespace, `kvmpod gc` removes it;
- `kvmpod run` SIGKILLed while it still prepares the pod (the pod directory made, the root overlay
  being mounted or the apps being installed; no VM yet): nothing runs or is mounted, the pod shows
  as aborted and `kvmpod gc` removes it.
The hypervisor SIGKILLed mid-run is tested in a running pod by tests/e2e/test_load.py, and kvmpod
run SIGKILLed while its VM starts by tests/e2e/test_run.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .kvmpod_guest import busybox_rootfs, host_kvmpod, kept_dir, processes_naming
from .test_run import RunState, _mounted_anywhere, _start, sh_app

pytestmark = pytest.mark.e2e

MANIFEST = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [sh_app("forever", "exec sleep 100000")]}


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_supervisor_sigkilled_takes_its_vm_along_and_gc_cleans_up() -> None:
    state = RunState(logs=kept_dir("kill-supervisor"))
    host_kvmpod("stage1", "build")  # built once (a new checkout) before the pod, not while it starts
    proc = _start(state, MANIFEST, {"forever": busybox_rootfs(state.logs / "images/forever")})
    state_file = state.pods / state.uuid / "state.json"

    def qemu() -> int | None:
        try:
            sup = json.loads(state_file.read_text()).get("hypervisor_pid")
            children = Path(f"/proc/{sup}/task/{sup}/children").read_text().split()
        except (OSError, ValueError):
            return None
        return int(children[0]) if children else None

    assert _wait(lambda: qemu() is not None or proc.poll() is not None, 300) and qemu(), proc.communicate()
    vm = qemu()
    supervisor = json.loads(state_file.read_text())["hypervisor_pid"]
    assert "kvmpod.host.hypervisor.supervisor" in Path(f"/proc/{supervisor}/cmdline").read_text()
    time.sleep(3)  # QEMU is booting the guest
    os.kill(supervisor, signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert _wait(lambda: not Path(f"/proc/{vm}").exists(), 30), "QEMU outlived its supervisor"
    lines = [ln for ln in err.splitlines() if "before the guest recorded forever" in ln]
    assert len(lines) == 1 and "the VM ended (killed by signal 9) before" in lines[0], err
    assert "Traceback" not in err
    assert processes_naming(state.uuid) == []
    assert _mounted_anywhere(str(state.pods)) == []
    status = json.loads(host_kvmpod("status", state.uuid, "--json", env=state.env).stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 1), status
    assert host_kvmpod("gc", "--older-than", "0s", env=state.env).stdout == f"removed {state.uuid}\n"
    assert not (state.pods / state.uuid).exists()
    shutil.rmtree(state.logs, ignore_errors=True)


@pytest.mark.parametrize("moment", ["pod directory made", "stage1 root ready"])
def test_kvmpod_run_sigkilled_while_preparing_leaves_nothing_gc_cannot_clean(moment: str) -> None:
    state = RunState(logs=kept_dir("kill-preparing"))
    host_kvmpod("stage1", "build")  # the stage1 is ready: preparing is then the pod's own work
    apps = {"forever": busybox_rootfs(state.logs / "images/forever")}
    for i in range(300):  # something to copy while preparing (30 MB)
        (apps["forever"] / f"blob{i}").write_bytes(os.urandom(100000))
    proc = _start(state, MANIFEST, apps)
    state_file = state.pods / state.uuid / "state.json"
    if moment == "pod directory made":
        assert _wait(lambda: state_file.is_file() or proc.poll() is not None, 120), "no state.json"
    else:
        seen = []

        def ready() -> bool:
            line = proc.stderr.readline()
            seen.append(line)
            return "stage1 root ready" in line or not line

        assert _wait(ready, 120) and "stage1 root ready" in seen[-1], seen
    recorded = json.loads(state_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert recorded["state"] == "preparing" and "hypervisor_pid" not in recorded, recorded
    time.sleep(0.5)  # the death signals of anything it had started
    assert processes_naming(state.uuid) == []
    assert _mounted_anywhere(str(state.pods)) == []
    listed = host_kvmpod("list", env=state.env).stdout
    assert f"{state.uuid}" in listed and "aborted" in listed, listed
    assert host_kvmpod("gc", "--older-than", "0s", env=state.env).stdout == f"removed {state.uuid}\n"
    assert not (state.pods / state.uuid).exists()
    shutil.rmtree(state.logs, ignore_errors=True)
