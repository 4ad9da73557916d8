"""Pod directories on the host: the apps' ends as the guest records them, the pod's exit status,
list/status/stop/gc, and kvmpod run's checks before it writes anything."""

import json
import os
import socket
import tempfile
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import UUID

from kvmpod.host.pods import pod_dirs as pods
from kvmpod.host.hypervisor import pod_devices
from kvmpod.host.pods.app_output import Follower, boot_status
from kvmpod.host.run import parse_app_images
from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.problems import InvalidInput

REPO = Path(__file__).resolve().parents[3]

# As the guest's reaper writes them (`systemctl show -p ...` of systemd 252).
FAILED = ("Result=exit-code\nExecMainStartTimestampMonotonic=156116578\nExecMainExitTimestampMonotonic=162875150\n"
          "ExecMainCode=1\nExecMainStatus=3\n")
OK = ("Result=success\nExecMainStartTimestampMonotonic=156180351\nExecMainExitTimestampMonotonic=159666843\n"
      "ExecMainCode=1\nExecMainStatus=0\n")
TERMINATED = ("Result=success\nExecMainStartTimestampMonotonic=158030069\nExecMainExitTimestampMonotonic=165189203\n"
              "ExecMainCode=2\nExecMainStatus=15\n")
SEGV = ("Result=core-dump\nExecMainStartTimestampMonotonic=1\nExecMainExitTimestampMonotonic=170000000\n"
        "ExecMainCode=3\nExecMainStatus=11\n")
NEVER = ("Result=success\nExecMainStartTimestampMonotonic=0\nExecMainExitTimestampMonotonic=0\nExecMainCode=0\n"
         "ExecMainStatus=0\n")


def test_exit_records_as_the_guest_writes_them():
    failed, ok, term, segv, never = (pods.parse_exit(n, t) for n, t in
                                     [("f", FAILED), ("o", OK), ("t", TERMINATED), ("s", SEGV), ("n", NEVER)])
    assert (failed.failed, failed.exit_status, failed.describe()) == (True, 3, "exited 3 (failed)")
    assert (ok.failed, ok.exit_status, ok.describe()) == (False, 0, "exited 0")
    # stopped by the pod's shutdown: SIGTERM is a clean end for systemd, and 143 for a shell
    assert (term.failed, term.exit_status, term.describe()) == (False, 143, "killed by signal 15")
    assert (segv.failed, segv.exit_status) == (True, 139)
    assert (never.failed, never.exit_status) == (True, 1)
    assert never.describe().startswith("did not start")
    assert pods.parse_exit("x", "ExecMainStatus=notanumber\n") is None


def test_the_pod_exits_with_the_first_app_that_failed():
    exits = {"o": pods.parse_exit("o", OK), "s": pods.parse_exit("s", SEGV), "f": pods.parse_exit("f", FAILED),
             "n": pods.parse_exit("n", NEVER), "t": pods.parse_exit("t", TERMINATED)}
    assert pods.first_failure(exits).app == "f"  # exited at 162.9 s, before s at 170 s
    assert pods.pod_exit_status(exits) == 3
    assert pods.pod_exit_status({"o": exits["o"], "t": exits["t"]}) == 0
    assert pods.pod_exit_status({"o": exits["o"], "n": exits["n"]}) == 1  # an app that never started failed


# As kvmpod-ended-/kvmpod-failed-<app>.service writes them (guest.lifecycle.RECORD_SCRIPT): no start time; the exit
# time is the guest's uptime when written.
OWN_FAILED = "Result=exit-code\nExecMainCode=1\nExecMainStatus=4\nExecMainExitTimestampMonotonic=161000000\n"
OWN_TERMINATED = "Result=success\nExecMainCode=2\nExecMainStatus=15\nExecMainExitTimestampMonotonic=165190000\n"


def test_records_written_by_the_apps_record_unit_are_apps_that_ran():
    failed, term = pods.parse_exit("g", OWN_FAILED), pods.parse_exit("u", OWN_TERMINATED)
    assert (failed.started, failed.failed, failed.exit_status, failed.describe()) == (True, True, 4, "exited 4 (failed)")
    assert (term.started, term.failed, term.exit_status, term.describe()) == (True, False, 143, "killed by signal 15")
    # ordered with the reaper's records by exit time: g at 161 s, before f's 162.9 s
    exits = {"f": pods.parse_exit("f", FAILED), "g": failed, "n": pods.parse_exit("n", NEVER)}
    assert pods.first_failure(exits).app == "g"
    assert pods.pod_exit_status(exits) == 4


# The app's main process exited 0, then its post-stop handler (ExecStopPost=) failed: systemd 252
# records the service's Result=exit-code while ExecMainStatus stays 0. rkt's pod failed then.
POST_STOP_FAILED = ("Result=exit-code\nExecMainStartTimestampMonotonic=156116578\n"
                    "ExecMainExitTimestampMonotonic=160000000\nExecMainCode=1\nExecMainStatus=0\n")


def test_a_failed_app_whose_main_process_exited_0_fails_the_pod_with_1():
    failed = pods.parse_exit("p", POST_STOP_FAILED)
    assert (failed.failed, failed.exit_status, failed.describe()) == (True, 0, "exited 0 (failed)")
    exits = {"o": pods.parse_exit("o", OK), "p": failed}
    assert pods.first_failure(exits).app == "p"
    assert pods.pod_exit_status(exits) == 1
    assert pods.pod_exit_status({"p": failed, "t": pods.parse_exit("t", TERMINATED)}) == 1


def _pod(base: Path, uuid: str = UUID, **state) -> pods.PodDir:
    pod = pods.pod_dir(uuid, str(base))
    os.makedirs(pod.exits)
    pods.write_state(pod, uuid=uuid, apps=["a", "b"], **state)
    return pod


def test_records_are_read_without_following_symlinks(tmp_path: Path):
    pod = _pod(tmp_path)
    Path(pod.exits, "a").write_text(OK)
    (tmp_path / "secret").write_text("ExecMainStatus=42\n")
    os.symlink(tmp_path / "secret", Path(pod.exits, "b"))
    exits = pods.read_exits(pod, ["a", "b"])
    assert exits["a"].exit_status == 0 and exits["b"] is None


def test_running_is_the_lock_held_by_run_or_its_hypervisor(tmp_path: Path):
    pod = _pod(tmp_path, state="running")
    assert pods.pod_state(pod) == "aborted"  # nobody holds the lock and no end was recorded
    # Another process (the hypervisor inherits the lock) holds it.
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({pod.lock!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert pods.pod_state(pod) == "running"
        removed, running = pods.gc(0, base=str(tmp_path))
        assert (removed, running) == ([], [UUID]) and os.path.isdir(pod.path)  # never a running pod
    finally:
        holder.kill()
        holder.wait()
    pods.write_state(pod, state="exited", finished=time.time() - 100)
    assert pods.pod_state(pod) == "exited"
    assert pods.gc(3600, base=str(tmp_path)) == ([], [])  # ended 100 s ago: younger than an hour
    assert pods.gc(60, base=str(tmp_path)) == ([UUID], [])
    assert not os.path.exists(pod.path)


def test_durations():
    assert [pods.parse_duration(t) for t in ("0", "90s", "30m", "2h", "1d", "1.5h")] == [0, 90, 1800, 7200, 86400, 5400]
    for bad in ("", "x", "-1h", "3w"):
        with pytest.raises(ValueError):
            pods.parse_duration(bad)


def test_qemu_gets_the_pod_share_the_apps_port_and_qmp(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pods, "QMP_DIR", str(tmp_path / "run"))
    pod = str(tmp_path / "pods" / UUID)
    args = pod_devices.qemu_pod_args(pod, "none")
    run = f"{tmp_path}/run/{UUID}"
    assert args == ["-chardev", f"socket,id=apps,path={run}.apps,server=on,wait=off", "-serial", "chardev:apps",
                    "-device", "virtio-serial-pci,id=kvmpod-serial",
                    "-chardev", f"socket,id=enter,path={run}.vport,server=on,wait=off",
                    "-device", "virtserialport,bus=kvmpod-serial.0,chardev=enter,name=kvmpod.enter",
                    "-qmp", f"unix:{tmp_path}/run/{UUID}.qmp,server=on,wait=off",
                    "-fsdev", f"local,id=pod,path={pod}/share,security_model=none",
                    "-device", "virtio-9p-pci,fsdev=pod,mount_tag=kvmpod_pod"]
    assert pod_devices.pod_kernel_params(pod) == ["kvmpod.pod_share=kvmpod_pod"]
    assert pod_devices.qemu_console_chardev(pod) == f"socket:{run}.console"


# ---------------------------------------------------------------- kvmpod run's checks

POD = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
    {"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"}},
    {"name": "db", "app": {"exec": ["/bin/db"], "user": "0", "group": "0"}}]}


def test_every_app_needs_one_image(tmp_path: Path):
    pod = parse_pod_manifest(POD)
    (tmp_path / "web").mkdir()
    (tmp_path / "x.tar").write_text("")
    assert parse_app_images([f"web={tmp_path}/web", f"db={tmp_path}/web"], pod) == {
        "web": f"{tmp_path}/web", "db": f"{tmp_path}/web"}
    with pytest.raises(InvalidInput) as caught:
        parse_app_images([f"web={tmp_path}/web", f"web={tmp_path}/web", "nope=/x", "bad", f"db={tmp_path}/x.tar"], pod)
    assert [str(p) for p in caught.value.problems] == [
        "--app: 'web' is given twice",
        "--app: 'nope' is not an app of the pod (its apps: web, db)",
        "--app: 'bad': give NAME=DIR, NAME=FILE.aci or NAME=IMAGE (oci:PATH[:REF], oci-archive:PATH[:REF], "
        "docker-archive:PATH[:REPO:TAG])",
        f"--app: db={tmp_path}/x.tar: not a directory nor an .aci file",
    ]
    with pytest.raises(InvalidInput) as caught:
        parse_app_images([], pod)
    assert [p.field for p in caught.value.problems] == ["apps[0]", "apps[1]"]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "generator"), **(env or {})))


def test_run_refuses_bad_input_before_writing_anything(tmp_path: Path):
    (tmp_path / "pod.json").write_text(json.dumps(POD))
    env = {"KVMPOD_PODS_DIR": str(tmp_path / "pods")}
    proc = _cli("run", "--manifest", str(tmp_path / "pod.json"), "--app", f"web={tmp_path}", env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("kvmpod: apps[1]: app 'db' has no image; add --app db=DIR")
    assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "pods").exists()
    proc = _cli("run", "--manifest", str(tmp_path / "pod.json"), "--rootfs", str(tmp_path), "--uuid", UUID,
                "--app", f"web={tmp_path}")
    assert (proc.returncode, proc.stderr) == (2, "kvmpod: --app: cannot be given with --rootfs (a prepared stage1 "
                                                 "tree); give the apps' images, or the tree, not both\n")


def test_status_list_gc_and_stop_from_the_cli(tmp_path: Path):
    env = {"KVMPOD_PODS_DIR": str(tmp_path)}
    pod = _pod(tmp_path, state="exited", exit_status=3, how="app a failed first: exited 3 (failed)",
               created=time.time(), finished=time.time())
    Path(pod.exits, "a").write_text(FAILED)
    Path(pod.exits, "b").write_text(TERMINATED)
    proc = _cli("status", UUID, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "state: exited (exit status 3: app a failed first: exited 3 (failed))" in proc.stdout
    assert "  a    exited 3 (failed)\n  b    killed by signal 15\n" in proc.stdout
    report = json.loads(_cli("status", UUID, "--json", env=env).stdout)
    assert [(a["name"], a["exit_status"]) for a in report["apps"]] == [("a", 3), ("b", 143)]
    listed = _cli("list", env=env).stdout.splitlines()
    assert listed[0].split() == ["UUID", "STATE", "EXIT", "CREATED", "APPS", "ADDRESSES"]
    assert listed[1].split()[:3] == [UUID, "exited", "3"] and listed[1].split()[-2:] == ["a,b", "-"]
    stop = _cli("stop", UUID, env=env)
    assert (stop.returncode, stop.stderr) == (2, f"kvmpod: UUID: pod {UUID} is not running (exited)\n")
    unknown = _cli("status", "00000000-0000-4000-8000-000000000000", env=env)
    assert unknown.returncode == 2 and "no pod 00000000-0000-4000-8000-000000000000" in unknown.stderr
    assert _cli("gc", "--older-than", "1h", env=env).stdout == ""
    assert _cli("gc", "--older-than", "soon", env=env).returncode == 2
    assert _cli("gc", env=env).stdout == f"removed {UUID}\n"


def test_stop_presses_the_power_button_over_qmp_until_the_pod_ends(tmp_path: Path, monkeypatch):
    """A fake QEMU: holds the pod's lock and serves QMP; system_powerdown makes it "power off"."""
    # A short directory: a socket path over 108 bytes cannot be bound, and tmp_path's can be that long.
    qmp_dir = tempfile.mkdtemp(prefix="kvmpod-qmp-", dir="/tmp")
    monkeypatch.setattr(pods, "QMP_DIR", qmp_dir)
    monkeypatch.setenv(pods.PODS_ENV, str(tmp_path / "pods"))
    pod = _pod(tmp_path / "pods", state="running")
    lock = pods.hold_lock(pod)
    server = socket.socket(socket.AF_UNIX)
    server.bind(pod.qmp)
    server.listen()
    server.settimeout(10)
    seen = []

    def qemu() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            f.flush()
            for line in f:
                command = json.loads(line)["execute"]
                seen.append(command)
                f.write(b'{"event": "SOMETHING"}\r\n{"return": {}}\r\n')
                f.flush()
                if command == "system_powerdown":
                    # QEMU exits and removes its socket; kvmpod run holds the lock a moment longer
                    # while it records the end: a press in that moment must not be an error.
                    os.unlink(pod.qmp)
                    time.sleep(1.5)
                    os.close(lock)  # the VM is gone: the lock is free
                    return

    thread = threading.Thread(target=qemu, daemon=True)
    thread.start()
    from kvmpod.host import run as runner
    from kvmpod.host.pod_commands import _stop

    monkeypatch.setattr(runner, "PRESS_AGAIN_SECONDS", 0.3)

    assert _stop(UUID, timeout=10) == 0
    thread.join(5)
    server.close()
    assert seen == ["qmp_capabilities", "system_powerdown"]
    assert pods.pod_state(pod) == "aborted"  # kvmpod run (absent here) records the end


# ---------------------------------------------------------------- what kvmpod run shows

def test_follower_reads_whole_lines_as_the_file_grows(tmp_path: Path):
    path = tmp_path / "apps.log"
    follower = Follower(str(path))
    assert follower.lines() == []
    path.write_bytes(b"[    1.000000] web[7]: hel")
    assert follower.lines() == []
    with path.open("ab") as f:
        f.write(b"lo\r\n[    1.500000] db[8]: ready\r\npartial")
    assert follower.lines() == ["[    1.000000] web[7]: hello", "[    1.500000] db[8]: ready"]
    assert follower.lines(final=True) == ["partial"]


def test_boot_status_is_systemds_last_status_line():
    console = ["[    0.000000] Linux version 6.1.0", "[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mLocal "
               "File Systems\x1b[0m.", "some other line"]
    assert boot_status(console) == "Reached target Local File Systems."
    assert boot_status(console[:1]) == "Linux version 6.1.0"
    assert boot_status([]) is None


# ---------------------------------------------------------------- systemd-machined

def test_a_pod_is_registered_with_machined_with_its_hypervisor_as_leader():
    from kvmpod.host.pods.machined import register_machine

    calls = []

    class FakeManager:  # pystemd.machine1.Manager: a context manager whose .Manager has the bus methods
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        class Manager:
            @staticmethod
            def CreateMachine(*args):
                calls.append(args)

    assert register_machine(UUID, 4242, manager=FakeManager) == f"kvmpod-{UUID}"
    import uuid

    assert calls == [(f"kvmpod-{UUID}".encode(), uuid.UUID(UUID).bytes, b"kvmpod", b"vm", 4242, b"", [])]


def test_boot_progress_is_one_rewritten_line_on_a_terminal_and_nothing_elsewhere():
    import io

    from kvmpod.host.pods.app_output import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    progress = Progress(tty)
    progress.show("kvmpod: booting pod 12345678   1.0 s  Reached target Local File Systems.")
    progress.show("kvmpod: booting pod 12345678   2.0 s  Started hello.service.")
    progress.clear()
    assert tty.getvalue().count("\r\x1b[K") == 3 and "\n" not in tty.getvalue()
    pipe = io.StringIO()
    Progress(pipe).show("anything")
    assert pipe.getvalue() == ""


def test_stage1_layer_is_addressed_by_the_base_and_the_deb(tmp_path: Path):
    from kvmpod.host.images import stage1

    deb = tmp_path / "kvmpod.deb"
    deb.write_bytes(b"one")
    first = stage1.stage1_hash("base1", deb)
    assert stage1.stage1_hash("base1", deb) == first
    assert stage1.stage1_hash("base2", deb) != first
    deb.write_bytes(b"two")
    assert stage1.stage1_hash("base1", deb) != first


def test_run_with_a_stage1_directory_missing_its_kernel_is_refused(tmp_path: Path):
    (tmp_path / "pod.json").write_text(json.dumps(POD))
    (tmp_path / "img").mkdir()
    (tmp_path / "stage1/root").mkdir(parents=True)
    env = {"KVMPOD_PODS_DIR": str(tmp_path / "pods")}
    proc = _cli("run", "--manifest", str(tmp_path / "pod.json"), "--app", f"web={tmp_path}/img", "--app",
                f"db={tmp_path}/img", "--stage1", str(tmp_path / "stage1"), env=env)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"kvmpod: --stage1: {tmp_path}/stage1/vmlinuz is missing; give a directory made by "
                           f"kvmpod stage1 build --out\n")
    assert not (tmp_path / "pods").exists()


def test_an_empty_record_is_none_and_no_problem(tmp_path: Path):
    """The guest writes a record with one write(2) (guest/lifecycle.py): an empty one is a VM gone between
    the file's creation and that write, as good as no record; a record with bytes but no end is a problem."""
    pod = _pod(tmp_path)
    Path(pod.exits, "a").write_text("")
    Path(pod.exits, "b").write_text("\n")
    exits, problems = pods.read_exit_records(pod, ["a", "b"])
    assert exits == {"a": None, "b": None}
    assert list(problems) == ["b"] and "Result=" in problems["b"]
