"""kvmpod.host.hypervisor.supervisor for real (root, no guest): the staged binds in a private mount namespace,
nothing in the host's mount table, exit status and signals passed on, children dying with it, and
QEMU (paused) connecting to the virtiofsd it started. The e2e modules then boot guests through it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import UUID, host, pod

from kvmpod.host.hypervisor.argv import HostSettings, build_argv, hypervisor_part
from kvmpod.host.hypervisor.resources import Resources
from kvmpod.host.hypervisor.volume_staging import STAGING_DIR
from kvmpod.pod.staging import staged_host_volumes

REPO = Path(__file__).resolve().parents[3]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "generator"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and binds need root")


def supervisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "kvmpod.host.hypervisor.supervisor", *args]


def staging_in_host_mounts() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if STAGING_DIR in line]


def in_own_namespace(script: str) -> list[str]:
    """The test's own private mount namespace, so the submounts it makes never touch the host."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script]


def test_staged_binds_read_only_and_non_recursive_in_a_namespace_the_host_never_sees(tmp_path: Path):
    for name in ("ro", "norec", "rec"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "top.txt").write_text("top\n")
    go, ready, out = tmp_path / "go", tmp_path / "ready", tmp_path / "out.json"
    checks = f"""
d={STAGING_DIR}
r() {{ if "$@" 2>/dev/null; then echo yes; else echo no; fi; }}
printf '{{"ro_write": "%s", "ro_sub_write": "%s", "norec_sub": "%s", "rec_sub": "%s", "rec_write": "%s", "ro_top": "%s"}}' \\
  "$(r touch $d/vol0/new)" "$(r touch $d/vol0/sub/new)" "$(r test -e $d/vol1/sub/marker)" \\
  "$(r test -e $d/vol2/sub/marker)" "$(r touch $d/vol2/new)" "$(cat $d/vol0/top.txt)" > {out}
touch {ready}
while [ ! -e {go} ]; do sleep 0.1; done
exit 7
"""
    command = supervisor("--mount", "rbind,ro", str(tmp_path / "ro"), f"{STAGING_DIR}/vol0",
                         "--mount", "bind", str(tmp_path / "norec"), f"{STAGING_DIR}/vol1",
                         "--mount", "rbind", str(tmp_path / "rec"), f"{STAGING_DIR}/vol2",
                         "--", "sh", "-c", checks)
    script = "for v in ro norec rec; do mount -t tmpfs t " + str(tmp_path) + "/$v/sub; echo m > " + str(tmp_path) + \
             "/$v/sub/marker; done; exec \"$@\""
    before = staging_in_host_mounts()
    proc = subprocess.Popen([*in_own_namespace(script), "sh", *command], env=ENV)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the stand-in hypervisor never ran (exit {proc.poll()})"
        during = staging_in_host_mounts()  # while the pod runs
        go.write_text("")
        assert proc.wait(timeout=30) == 7, "the hypervisor's exit status must be the supervisor's"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert before == during == staging_in_host_mounts() == []
    assert json.loads(out.read_text()) == {
        "ro_write": "no", "ro_sub_write": "no",   # read-only down to its submounts
        "norec_sub": "no", "rec_sub": "yes",      # recursive: false hides the submount; rbind shows it
        "rec_write": "yes", "ro_top": "top"}
    assert not (tmp_path / "ro/new").exists() and (tmp_path / "rec/new").exists()


def test_a_killed_supervisor_takes_the_hypervisor_with_it(tmp_path: Path):
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(supervisor("--mount", "rbind,ro", str(tmp_path), f"{STAGING_DIR}/vol0", "--",
                                       "sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"), env=ENV)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), "the hypervisor outlived its supervisor"
    assert staging_in_host_mounts() == []


def test_sigterm_is_passed_on_and_setup_errors_are_one_line(tmp_path: Path):
    ready = tmp_path / "ready"
    proc = subprocess.Popen(supervisor("--", "sh", "-c", f"touch {ready}; exec sleep 300"), env=ENV)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    bad = subprocess.run(supervisor("--mount", "rbind,ro", str(tmp_path / "missing"), f"{STAGING_DIR}/vol0",
                                    "--", "true"), env=ENV, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("kvmpod-supervisor: ") and "missing" in bad.stderr


@pytest.mark.skipif(not os.path.exists("/usr/lib/qemu/virtiofsd"), reason="virtiofsd not installed")
def test_real_qemu_connects_to_the_virtiofsd_the_supervisor_starts(tmp_path: Path):
    (tmp_path / "root").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "rw").mkdir()
    p = pod([host("db", str(tmp_path / "ro"), readOnly=True), host("out", str(tmp_path / "rw"))])
    settings = HostSettings(hypervisor="qemu", pod_uuid=UUID, rootfs=str(tmp_path / "root"), kernel="/nonexistent",
                            accel="tcg", share="virtiofs", unsafe_volume_writes=True, console=f"file:{tmp_path}/c")
    argv = build_argv(p, staged_host_volumes(p), (), settings, Resources(cpus=1, memory_mib=256))
    qemu = hypervisor_part(argv)
    for option in ("-kernel", "-append"):
        i = qemu.index(option)
        del qemu[i:i + 2]
    command = argv[:len(argv) - len(hypervisor_part(argv))] + qemu + ["-S", "-monitor", "stdio"]
    result = subprocess.run(command, input="info chardev\nquit\n", capture_output=True, text=True, timeout=60,
                            env=ENV)
    assert result.returncode == 0, result.stderr
    assert "vfs0: filename=unix:" in result.stdout and "vfs1: filename=unix:" in result.stdout, result.stdout
    assert staging_in_host_mounts() == []
    leftover = subprocess.run(["pgrep", "-f", f"virtiofsd --socket-path={STAGING_DIR}/vfs"], capture_output=True)
    assert leftover.returncode == 1, "a virtiofsd outlived its pod"
