"""Issue 22: a hostile guest's pod share, in a real boot through `kvmpod run` (boot "hostile").

Root in the guest (not an app: systemd's own `systemd.run=` on the kernel command line, through
KVMPOD_EXTRA_KERNEL_PARAMS) does to the pod share (/run/kvmpod/pod) what a compromised guest can:
once three apps have recorded their ends, replaces those records with a link to a host file, a FIFO
(which QEMU's 9p server refuses to make: ENXIO) and a 10 MB record of NUL bytes without a line
break, adds a record for an app the pod does not have, then writes 64 MiB into the share. The host's disk gets none of the flood (the share is a 4 MiB tmpfs in the
supervisor's namespace), the host reads nothing through the link, says which records it could not
read and why, and the pod still ends cleanly, with status 1 (records it could not read: a failed pod,
as rkt's) and the one good app's end.

Why the last attempt "stalled": `systemd.run=` makes systemd boot into kernel-command-line.target
instead of the default target (systemd-run-generator(8): the unit "is generated for it and booted
into"), so multi-user.target, which wants the pod's apps and their share, was never started: no
stall, the pod was never started. Here `systemd.unit=multi-user.target` keeps the pod's target and
`systemd.wants=kernel-command-line.service` (systemd-debug-generator) still runs the command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import module_boot
from .kvmpod_guest import busybox_rootfs, kept_dir
from .test_run import RUN_TIMEOUT, RunState, _finish, _start, sh_app

pytestmark = pytest.mark.e2e

SHARE = "/run/kvmpod/pod"
CAP = 4 * 1024 * 1024  # hypervisor.pod_devices.POD_SHARE_BYTES
OUT = " | tr a-z A-Z > /dev/ttyS0"  # upper case: the kernel command line on the console has the lower-case text
# No $, % or backslash: systemd would expand or unescape them in ExecStart=.
# In this order: the three apps' records are there (they exit at once) and their reapers are done, then
# replaced, then the flood
# (an app whose reaper wrote while the share was full would have no record at all: a race, not a check).
HOSTILE = ("until mountpoint -q " + SHARE + "; do sleep 1; done; "
           "until [ -f " + SHARE + "/apps/link ] && [ -f " + SHARE + "/apps/fifo ] && [ -f " + SHARE + "/apps/huge ]; "
           "do sleep 1; done; "
           # and their reapers have stopped: a record unit writes the record, the reaper's stop comes
           # after it and rewrites a record it finds missing (issue 20)
           "while systemctl -q is-active kvmpod-reaper-link kvmpod-reaper-fifo kvmpod-reaper-huge; do sleep 1; done; "
           "rm -f " + SHARE + "/apps/link; ln -s /etc/shadow " + SHARE + "/apps/link; "
           "rm -f " + SHARE + "/apps/fifo; mkfifo " + SHARE + "/apps/fifo 2>&1 | tr a-z A-Z > /dev/ttyS0; "
           "head -c 10000000 /dev/zero > " + SHARE + "/apps/huge; echo hostile-huge-bytes" + OUT + "; "
           "wc -c < " + SHARE + "/apps/huge > /dev/ttyS0; truncate -s 1000000 " + SHARE + "/apps/huge; "
           "echo Result=success > " + SHARE + "/apps/ghost; "
           "dd if=/dev/zero of=" + SHARE + "/flood bs=1M count=64 2>/dev/null; echo hostile-flood-bytes" + OUT + "; "
           "wc -c < " + SHARE + "/flood > /dev/ttyS0; rm -f " + SHARE + "/flood; "
           "echo hostile-planted" + OUT)
PARAMS = ("systemd.run=\"systemd-run --no-block -u kvmpod-hostile /bin/sh -c '" + HOSTILE + "'\" "
          "systemd.run_success_action=none systemd.run_failure_action=none "
          "systemd.unit=multi-user.target systemd.wants=kernel-command-line.service")


def _run_hostile(state: RunState, tmp: Path) -> Iterator[None]:
    ctl = state.logs / "ctl"
    ctl.mkdir(parents=True)
    state.vols["ctl"] = ctl
    state.extra_env = {"KVMPOD_EXTRA_KERNEL_PARAMS": PARAMS}
    quick = "echo {0} done; exit 0"
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        sh_app("main", "echo main up; while [ ! -e /ctl/go ]; do sleep 1; done; echo main bye", [("ctl", "/ctl")]),
        sh_app("link", quick.format("link")), sh_app("fifo", quick.format("fifo")), sh_app("huge", quick.format("huge")),
    ], "volumes": [{"name": "ctl", "kind": "host", "source": str(ctl)}]}
    apps = {name: busybox_rootfs(state.logs / "images" / name) for name in ("main", "link", "fifo", "huge")}
    started = time.monotonic()
    proc = _start(state, manifest, apps)
    console = state.pods / state.uuid / "console.log"
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if console.is_file() and "HOSTILE-PLANTED" in console.read_text(errors="replace"):
            break
        time.sleep(1)
    state.results = {"planted": console.is_file() and "HOSTILE-PLANTED" in console.read_text(errors="replace"),
                     "pod_bytes_running": _bytes(state.pods / state.uuid, skip=("stage1",))}
    (ctl / "go").touch()
    _finish(state, proc)
    state.seconds = time.monotonic() - started
    yield


def _bytes(top: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for path, dirs, files in os.walk(top):
        if Path(path) == top:
            dirs[:] = [d for d in dirs if d not in skip]
        total += sum(os.lstat(os.path.join(path, f)).st_size for f in files)
    return total


@pytest.fixture(scope="module")
def hostile(request: pytest.FixtureRequest):
    yield from module_boot(request, type("Hostile", (RunState,), {"LABEL": "hostile"})(logs=kept_dir("hostile")),
                           _run_hostile)


def _console(state: RunState) -> str:
    return (state.pods / state.uuid / "console.log").read_text(errors="replace")


def _reported(state: RunState, label: str) -> int:
    m = re.search(rf"{label.upper()}\s+(\d+)", _console(state))
    assert m, f"the guest never reported {label} {state.where()}"
    return int(m.group(1))


def test_the_guests_flood_of_its_share_stops_at_the_cap_and_never_reaches_the_host(hostile: RunState) -> None:
    hostile.require()
    assert hostile.results["planted"], f"the guest's hostile command never finished {hostile.where()}"
    assert 0 < _reported(hostile, "hostile-flood-bytes") <= CAP
    assert 0 < _reported(hostile, "hostile-huge-bytes") <= CAP  # the 10 MB record too
    # What the pod directory held on the host while it ran (its root's upper dir aside): logs, records.
    assert hostile.results["pod_bytes_running"] < 2 * 1024 * 1024, hostile.results
    share = hostile.pods / hostile.uuid / "share"
    assert sorted(os.listdir(share)) == ["apps", "refused.json"]
    assert sorted(os.listdir(share / "apps")) == ["ghost", "main"]  # only regular records of at most 4 KiB


def test_the_host_says_which_records_it_could_not_read_and_ends_the_pod_cleanly(hostile: RunState) -> None:
    hostile.require()
    assert hostile.rc == 1, hostile.where()
    [ended] = [ln for ln in hostile.stderr.splitlines() if f"pod {hostile.uuid} ended after" in ln]
    assert "main exited 0" in ended, ended
    for app, what in (("link", "is a symbolic link"), ("huge", "is larger than 4096 bytes")):
        assert f"{app}: its record {what}" in ended and "(not copied out of the pod share)" in ended, ended
    # QEMU's 9p server does not let the guest make a FIFO in the share at all (ENXIO): the guest removed
    # fifo's record and could put nothing in its place (the host's side of a FIFO: test_pod_share_real.py).
    assert "MKFIFO: CANNOT CREATE FIFO '/RUN/KVMPOD/POD/APPS/FIFO': NO SUCH DEVICE OR ADDRESS" in _console(hostile)
    assert "fifo: no record" in ended, ended
    assert "the VM ended (hypervisor exit 0) before the guest recorded fifo; the host could not read the records " \
           "of link, huge; see " in hostile.stderr, hostile.where()
    assert "ghost" not in ended and "Traceback" not in hostile.stderr
    status = hostile.status()
    assert (status["state"], status["exit_status"]) == ("exited", 1), status
    recorded = json.loads((hostile.pods / hostile.uuid / "state.json").read_text())
    assert recorded["hypervisor_exit"] == 0, recorded  # the guest powered off by itself: a clean end
    apps = {a["name"]: a["ended"] for a in status["apps"]}
    assert apps["main"] == "exited 0" and apps["link"].startswith("its record is a symbolic link"), apps
    assert ("main", "main bye") in hostile.app_lines(), hostile.where()
    mounts = Path("/proc/self/mounts").read_text()
    assert str(hostile.pods) not in mounts
    assert subprocess.run(["pgrep", "-f", hostile.uuid], capture_output=True).stdout == b""
