"""Issue 22, faults without a guest: `kvmpod run` with a stand-in for QEMU (a process that only sleeps,
found first on PATH; everything else is real: the pod directory, the root overlay in kvmpod run's
namespace, the supervisor and its capped pod share, the lock). The hypervisor SIGKILLed mid-run, the
supervisor SIGKILLed, and kvmpod run SIGKILLed at any moment while it prepares the pod: each has a
defined exit status and one clear line, nothing is left running or mounted, `kvmpod gc` cleans up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmpod.host.hypervisor.boot_files import BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kvmpod run's namespaces and overlay need root")


@pytest.fixture
def setup(tmp_path: Path):
    stage1 = tmp_path / "stage1"
    (stage1 / "root/etc").mkdir(parents=True)
    kernel = bytearray(4096)
    kernel[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] = BZIMAGE_MAGIC
    (stage1 / "vmlinuz").write_bytes(bytes(kernel))
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    for i in range(200):  # something to copy while preparing
        (app / "bin" / f"f{i}").write_bytes(os.urandom(20000))
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "volumes": [], "apps": [
        {"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"}}]}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").write_text(f"#!/bin/sh\necho $$ > {tmp_path}/qemu.pid\nexec sleep 600\n")
    (bin_dir / "qemu-system-x86_64").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), PATH=f"{bin_dir}:{os.environ['PATH']}",
               KVMPOD_DIR=str(tmp_path / "state"))
    env.pop("KVMPOD_PODS_DIR", None)
    argv = [sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(pod), "--app", f"web={app}",
            "--stage1", str(stage1), "--net", "none", "--no-systemd"]
    return tmp_path, env, argv


def kvmpod(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def wait_for(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def nothing_left(tmp_path: Path) -> None:
    """No process of the pod and no mount of it in any mount namespace."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            mounts = (entry / "mountinfo").read_text()
        except OSError:
            continue
        assert str(tmp_path).encode() not in cmdline or b"pytest" in cmdline, cmdline
        assert f" {tmp_path}/state" not in mounts, f"{entry.name} still has a mount of the pod"


def pid_of(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip())
    return int(path.read_text())


@pytest.mark.parametrize("victim", ["hypervisor", "supervisor"])
def test_the_hypervisor_or_the_supervisor_killed_mid_run(setup, victim):
    tmp_path, env, argv = setup
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    qemu = pid_of(tmp_path / "qemu.pid")
    supervisor = int(Path(f"/proc/{qemu}/stat").read_text().split(") ", 1)[1].split()[1])  # its parent
    assert "kvmpod.host.hypervisor.supervisor" in Path(f"/proc/{supervisor}/cmdline").read_text()
    listing = kvmpod(env, "list").stdout
    assert " running " in listing

    os.kill(qemu if victim == "hypervisor" else supervisor, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 1, err
    ended = [line for line in err.splitlines() if "before the guest recorded web" in line]
    # QEMU killed: the supervisor passes on 128+9; the supervisor killed: kvmpod run saw its child killed
    how = "hypervisor exit 137" if victim == "hypervisor" else "killed by signal 9"
    assert len(ended) == 1 and f"the VM ended ({how}) before" in ended[0], err
    assert "Traceback" not in err
    uuid = os.listdir(tmp_path / "state/pods")[0]
    status = json.loads(kvmpod(env, "status", uuid, "--json").stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 1)
    nothing_left(tmp_path)
    assert kvmpod(env, "gc").stdout == f"removed {uuid}\n"


@pytest.mark.parametrize("after", [0.0, 0.15, 0.3, 0.6, 1.2])
def test_kvmpod_run_killed_at_any_moment_of_preparing_leaves_nothing_gc_cannot_clean(setup, after):
    tmp_path, env, argv = setup
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    time.sleep(0.5)  # the children's death signals
    nothing_left(tmp_path)
    pods = tmp_path / "state/pods"
    left = os.listdir(pods) if pods.exists() else []
    for uuid in left:
        status = json.loads(kvmpod(env, "status", uuid, "--json").stdout)
        assert status["state"] == "aborted"
    assert kvmpod(env, "gc").stdout == "".join(f"removed {u}\n" for u in sorted(left))
    assert not pods.exists() or os.listdir(pods) == []


def test_a_vm_killed_by_a_second_ctrl_c_still_gives_the_records_of_the_apps_that_ended(setup):
    """kvmpod run kills the VM (a second Ctrl-C, or no poweroff in time) through the supervisor with
    SIGTERM: the hypervisor ends, and what the guest recorded is still copied out of the capped share."""
    tmp_path, env, argv = setup
    qemu = tmp_path / "bin/qemu-system-x86_64"
    qemu.write_text(f"""#!/bin/sh
echo $$ > {tmp_path}/qemu.pid
for a in "$@"; do case "$a" in local,id=pod,path=*) s=${{a#local,id=pod,path=}}; s=${{s%%,*}};; esac; done
printf 'Result=success\\nExecMainStartTimestampMonotonic=5\\nExecMainExitTimestampMonotonic=6\\nExecMainCode=1\\nExecMainStatus=0\\n' > "$s/apps/web"
exec sleep 600
""")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_of(tmp_path / "qemu.pid")
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # the power button (no QMP here: nothing happens)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # the second one kills the VM
    out, err = proc.communicate(timeout=60)

    assert "kvmpod: second interrupt: killing the VM" in err
    assert "ended after" in err and "web exited 0" in err, err
    assert proc.returncode == 130, err
    nothing_left(tmp_path)
