"""kvmpod under a real systemd as PID 1 (boot "systemd-host"): machined, machine.slice, machinectl.

This machine has no systemd as PID 1, so the test boots one: `systemd-nspawn --boot --keep-unit
--register=no` of a Debian bookworm root with systemd 252, systemd-machined (systemd-container),
D-Bus, QEMU and this checkout's .deb (tests/e2e/systemd_host.py; the stage1 image is bound in
read-only and given with `kvmpod run --stage1`). Commands run inside through `nsenter --all` into
the container's init. Three pods run at once (TCG guests inside the container), one per way of
stopping it:

- each `kvmpod run` runs as `kvmpod-<uuid>.service` in machine.slice (systemctl show), `machinectl
  list` shows `kvmpod-<uuid>` with class vm and service kvmpod, `machinectl status` names the unit,
  `kvmpod list`/`status` say running, a second `kvmpod run` of the same UUID is refused;
- `kvmpod enter` and `kvmpod logs` from inside that host;
- `machinectl poweroff`, `machinectl terminate` and `systemctl stop` each end a pod as `kvmpod stop`
  does: the app stopped by SIGTERM in the guest's shutdown and recorded, kvmpod run exits 0, the
  machine and the unit are gone; then `kvmpod gc` removes the three and `kvmpod list` agrees.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from kvmpod.host.images import stage1 as stage1_images

from .conftest import BootState, module_boot
from .kvmpod_guest import busybox_rootfs, kept_dir, pod_uuid, write_json
from .systemd_host import ensure_systemd_host

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 600.0
POD_TIMEOUT = 1200.0
STOP_TIMEOUT = 600.0
STOPS = ("machinectl poweroff", "machinectl terminate", "systemctl stop")


@dataclass
class HostState(BootState):
    LABEL: ClassVar[str] = "systemd-host"
    root: Path | None = None
    results: dict[str, object] = field(default_factory=dict)

    def output_dir(self) -> Path | None:
        return self.logs


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(w) for w in text.split()]


def _container_init(nspawn: int) -> int | None:
    todo = [nspawn]
    while todo:
        pid = todo.pop()
        for child in _children(pid):
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
            except OSError:
                continue
            todo.append(child)
    return None


class Container:
    def __init__(self, init_pid: int):
        self.init = init_pid

    def argv(self, command: str) -> list[str]:
        return ["nsenter", "-t", str(self.init), "-a", "-r", "-w", "--", "/usr/bin/env", "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "KVMPOD_NET=none", "LANG=C.UTF-8", "/bin/sh", "-c", command]

    def run(self, command: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A step that does not end in time is recorded as such (returncode None), and the boot goes on
        to its other checks."""
        try:
            return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            return subprocess.CompletedProcess(expired.cmd, None, out, f"did not end within {timeout:.0f} s")

    def popen(self, command: str, out: Path) -> subprocess.Popen:
        handle = open(out, "w")
        return subprocess.Popen(self.argv(command), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)


def _wait_for(predicate, timeout: float, every: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def _boot(state: HostState, tmp: Path) -> Iterator[None]:
    started = time.monotonic()
    cached = ensure_systemd_host()
    image = stage1_images.ensure_stage1()
    state.install = "systemd-nspawn of the systemd-host root + this checkout's .deb"
    root = tmp
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(root)], check=True)
    state.root = root
    try:
        deb = stage1_images.checkout_deb(state.logs)
        shutil.copy2(deb, root / "tmp" / deb.name)
        subprocess.run(["chroot", str(root), "dpkg", "-i", f"/tmp/{deb.name}"], check=True, capture_output=True)
        srv = root / "srv/kvmpod"
        busybox_rootfs(srv / "app")
        write_json(srv / "pod.json", {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
            {"name": "app", "app": {"exec": ["/bin/sh", "-c", "echo app started; exec sleep 100000"],
                                    "user": "0", "group": "0"}}]})
        name = f"kvmpod-sdhost-{os.getpid()}"
        nspawn_log = open(state.logs / "nspawn.log", "w")
        nspawn = subprocess.Popen(["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "-D", str(root),
                                   "-M", name, f"--bind-ro={image.root.parent}:/stage1"],
                                  stdin=subprocess.DEVNULL, stdout=nspawn_log, stderr=subprocess.STDOUT)
        try:
            _drive(state, nspawn)
        finally:
            if nspawn.poll() is None:
                nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
                try:
                    nspawn.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    nspawn.kill()
                    nspawn.wait()
            state.results["nspawn_rc"] = nspawn.returncode
    finally:
        state.seconds = time.monotonic() - started
        state.accelerator = "tcg"
    yield
    shutil.rmtree(root, ignore_errors=True)


def _keep_pod_logs(root: Path, logs: Path) -> None:
    """Each pod's console, apps and hypervisor logs and state, out of the container's root (removed after
    the boot): what a failed stop is diagnosed from."""
    for pod in (root / "var/lib/kvmpod/pods").glob("*"):
        for name in ("console.log", "console.log.1", "apps.log", "hypervisor.log", "state.json"):
            if (pod / name).is_file():
                (logs / "pods" / pod.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(pod / name, logs / "pods" / pod.name / name)


def _drive(state: HostState, nspawn: subprocess.Popen) -> None:
    r = state.results
    init = None
    deadline = time.monotonic() + 60
    while init is None and time.monotonic() < deadline and nspawn.poll() is None:
        init = _container_init(nspawn.pid)
        time.sleep(0.5)
    if init is None:
        raise RuntimeError(f"systemd-nspawn started no systemd (exit {nspawn.poll()}); see {state.logs}/nspawn.log")
    box = Container(init)
    # Asked again while it says nothing: under load (8-9 on this 2-core machine) a first ask, right after
    # the container's init appeared, once printed nothing at all (not even "starting"): the manager's
    # bus was not there yet, presumably. Why each ask failed goes into the assertion's message.
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        booted = box.run("systemctl is-system-running --wait", timeout=max(1.0, deadline - time.monotonic()))
        if booted.stdout.strip() or time.monotonic() > deadline or nspawn.poll() is not None:
            break
        r.setdefault("system_asks", []).append((booted.returncode, booted.stderr.strip()[-300:]))
        time.sleep(2)
    r["system"] = booted.stdout.strip()
    r["failed_units"] = box.run("systemctl --failed --no-legend --no-pager").stdout
    r["pid1"] = box.run("readlink /proc/1/exe; systemctl --version | head -n1").stdout
    uuids = [pod_uuid() for _ in STOPS]
    r["uuids"] = uuids
    runs = []
    for uuid in uuids:
        command = (f"kvmpod run --stage1 /stage1 --manifest /srv/kvmpod/pod.json --app app=/srv/kvmpod/app "
                   f"--uuid {uuid}")
        runs.append(box.popen(command, state.logs / f"run-{uuid}.out"))

    def all_started() -> bool:
        return all("app started" in box.run(f"kvmpod logs {u}").stdout for u in uuids) or \
            any(p.poll() is not None for p in runs)

    r["started"] = _wait_for(all_started, POD_TIMEOUT)
    u = uuids[0]
    r["unit"] = box.run(f"systemctl show -p Slice -p ActiveState -p KillMode -p MainPID kvmpod-{u}.service").stdout
    r["machines"] = box.run("machinectl list --no-legend --no-pager").stdout
    r["machine_status"] = box.run(f"machinectl status --no-pager kvmpod-{u}").stdout
    r["machine_show"] = box.run(f"machinectl show kvmpod-{u}").stdout
    r["list_running"] = box.run("kvmpod list").stdout
    r["status_running"] = box.run(f"kvmpod status {u} --json").stdout
    r["second_run"] = box.run(f"kvmpod run --stage1 /stage1 --manifest /srv/kvmpod/pod.json "
                              f"--app app=/srv/kvmpod/app --uuid {u}")
    r["enter"] = box.run(f"kvmpod enter {u} -- sh -c 'echo entered from the systemd host; exit 4'", timeout=420)
    r["enter_stdin"] = box.run(f"echo piped | kvmpod enter {u} -- cat", timeout=300)
    r["logs"] = box.run(f"kvmpod logs {u} --app app").stdout
    for uuid, stop, proc in zip(uuids, STOPS, runs):
        target = f"kvmpod-{uuid}" if stop.startswith("machinectl") else f"kvmpod-{uuid}.service"
        issued = box.run(f"{stop} {target}", timeout=STOP_TIMEOUT)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        r[stop] = {"issued": (issued.returncode, issued.stderr), "run_rc": rc,
                   "status": box.run(f"kvmpod status {uuid} --json").stdout,
                   "unit_after": box.run(f"systemctl is-active kvmpod-{uuid}.service").stdout.strip(),
                   "machines_after": box.run("machinectl list --no-legend --no-pager").stdout,
                   "run_out": (state.logs / f"run-{uuid}.out").read_text()}
    _keep_pod_logs(state.root, state.logs)  # before gc removes the pods
    r["gc"] = box.run("kvmpod gc").stdout
    r["list_after"] = box.run("kvmpod list").stdout
    for proc in runs:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def host(request: pytest.FixtureRequest):
    yield from module_boot(request, HostState(logs=kept_dir("systemd-host")), _boot)


def test_systemd_is_pid_1_with_machined(host: HostState) -> None:
    host.require()
    r = host.results
    assert r["system"] in ("running", "degraded"), (r["system"], r["failed_units"], r.get("system_asks"))
    assert "systemd 252" in r["pid1"], r["pid1"]
    assert r["started"], f"the pods did not start {host.where()}"


def test_kvmpod_run_is_a_unit_in_machine_slice_and_a_vm_machine(host: HostState) -> None:
    host.require()
    r = host.results
    u = r["uuids"][0]
    assert "Slice=machine.slice" in r["unit"] and "ActiveState=active" in r["unit"], r["unit"]
    assert "KillMode=mixed" in r["unit"], r["unit"]
    for uuid in r["uuids"]:
        assert re.search(rf"^kvmpod-{uuid}\s+vm\s+kvmpod\b", r["machines"], re.M), r["machines"]
    assert f"Unit: kvmpod-{u}.service" in r["machine_status"], r["machine_status"]
    assert "Class=vm" in r["machine_show"] and f"Unit=kvmpod-{u}.service" in r["machine_show"], r["machine_show"]
    leader = re.search(r"^Leader=(\d+)$", r["machine_show"], re.M)
    main = re.search(r"^MainPID=(\d+)$", r["unit"], re.M)
    assert leader and main and leader.group(1) == main.group(1), "the machine's leader is kvmpod run, the unit's main"


def test_kvmpod_list_and_status_agree_and_a_second_run_is_refused(host: HostState) -> None:
    host.require()
    r = host.results
    for uuid in r["uuids"]:
        assert re.search(rf"^{uuid}\s+running\s", r["list_running"], re.M), r["list_running"]
    assert json.loads(r["status_running"])["state"] == "running"
    second = r["second_run"]
    assert second.returncode == 2 and "already exists" in second.stderr, second


def test_enter_and_logs_from_the_systemd_host(host: HostState) -> None:
    host.require()
    r = host.results
    assert (r["enter"].stdout, r["enter"].returncode) == ("entered from the systemd host\n", 4), r["enter"]
    assert (r["enter_stdin"].stdout, r["enter_stdin"].returncode) == ("piped\n", 0), r["enter_stdin"]
    assert "app started" in r["logs"], r["logs"]


# machinectl poweroff once ended its pod with no record of the app (a boot at 07:02, load ~5): kvmpod run
# got the SIGRTMIN+4 and pressed the power button every 15 s, but the guest answered none of the presses
# and the VM was killed after 180 s. Diagnosed in kept pods' journals (README, "Stopping"): the stop
# came as soon as the app had started, while the loaded guest was still booting, and a press counts
# only once udev has loaded the ACPI button module and logind watches it, which under load came more
# than 140 s later. Not machinectl's doing: kvmpod stop and Ctrl-C that early lost their presses the
# same way. Fixed for all of them by host/hypervisor/guest_stop.py (Ctrl-Alt-Del with each unanswered
# press once systemd runs; the enter boot checks it with logind masked). Here the stops now come after
# the enter checks, in a booted guest.
@pytest.mark.parametrize("stop", STOPS)
def test_systemd_stops_the_pod_as_kvmpod_stop_does(host: HostState, stop: str) -> None:
    host.require()
    result = host.results[stop]
    uuid = host.results["uuids"][STOPS.index(stop)]
    assert result["issued"][0] == 0, result
    assert result["run_rc"] == 0, result  # a clean stop: no app failed
    status = json.loads(result["status"])
    assert status["state"] == "exited" and status["exit_status"] == 0, status
    assert status["apps"][0]["ended"] == "killed by signal 15", ("the guest stopped the app and recorded it", status)
    assert "ended after" in result["run_out"], result["run_out"]
    assert result["unit_after"] in ("inactive", ""), result
    assert f"kvmpod-{uuid}" not in result["machines_after"], result


def test_gc_after_the_stops(host: HostState) -> None:
    host.require()
    r = host.results
    for uuid in r["uuids"]:
        assert f"removed {uuid}" in r["gc"], r["gc"]
        assert uuid not in r["list_after"], r["list_after"]
