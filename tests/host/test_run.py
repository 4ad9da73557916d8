"""kvmpod run: without systemd it execs exactly the argv `kvmpod args` prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import UUID

from kvmpod.host.hypervisor.launch import host_runs_systemd, vm_unit_name

REPO = Path(__file__).resolve().parents[2]


def test_run_execs_the_same_argv_that_args_prints(tmp_path: Path):
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "vmlinuz").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "pod.json").write_text(json.dumps({
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                  "mounts": [{"volume": "data", "path": "/srv"}]}],
        "volumes": [{"name": "data", "kind": "host", "source": str(tmp_path / "data")}]}))
    # A stand-in hypervisor on PATH that records the argv it was started with.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "qemu-system-x86_64"
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    recorder.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO / "generator"))
    common = ["--hypervisor", "qemu", "--manifest", str(tmp_path / "pod.json"), "--rootfs",
              str(tmp_path / "stage1"), "--uuid", UUID, "--accel", "tcg"]

    printed = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "args", *common, "--format", "json"],
                             env=env, capture_output=True, text=True, check=True)
    ran = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "run", *common, "--no-systemd"],
                         env=env, capture_output=True, text=True)

    assert (ran.returncode, ran.stderr) == (0, "")
    assert ["qemu-system-x86_64"] + json.loads((tmp_path / "argv.json").read_text()) == json.loads(printed.stdout)


def test_the_vm_unit_is_named_after_the_pod():
    assert vm_unit_name(UUID) == f"kvmpod-{UUID}.service"


def test_systemd_host_detection_is_sd_booted(fs):
    assert not host_runs_systemd()
    fs.create_dir("/run/systemd/system")
    assert host_runs_systemd()


def test_under_systemd_the_argv_becomes_a_transient_unit_in_machine_slice(monkeypatch, tmp_path: Path):
    # pystemd replaces its module pystemd.run by its run() function; stand in for that function.
    started = []
    monkeypatch.setitem(sys.modules, "pystemd", type(sys)("pystemd"))
    monkeypatch.setitem(sys.modules, "pystemd.run", lambda cmd, **options: started.append((cmd, options)))
    hypervisor = tmp_path / "qemu-system-x86_64"
    hypervisor.write_text("#!/bin/sh\n")
    hypervisor.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    from kvmpod.host.hypervisor.launch import start_transient_service

    name = start_transient_service(["qemu-system-x86_64", "-name", "kvmpod-x"], UUID)

    assert name == f"kvmpod-{UUID}.service"
    assert started == [([str(hypervisor).encode(), b"-name", b"kvmpod-x"],
                        {"name": name.encode(), "slice_": b"machine.slice", "service_type": b"simple",
                         "collect": True, "env": None})]


def test_under_systemd_a_missing_hypervisor_is_named(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "pystemd", type(sys)("pystemd"))
    monkeypatch.setitem(sys.modules, "pystemd.run", lambda cmd, **options: None)
    monkeypatch.setenv("PATH", str(tmp_path))

    from kvmpod.host.hypervisor.launch import start_transient_service

    with pytest.raises(RuntimeError, match="qemu-system-x86_64 is not on PATH"):
        start_transient_service(["qemu-system-x86_64"], UUID)


@pytest.mark.skipif(os.geteuid() != 0, reason="the pod's root overlay needs root")
@pytest.mark.parametrize("keep", [False, True])
def test_only_a_kept_pod_boots_with_a_persistent_journal(tmp_path: Path, keep: bool):
    """issue 20: the stage1 has no /var/log/journal (its journal stays in the guest's RAM); kvmpod run
    --keep makes it in the pod's root before the VM starts, and it is in the kept upper dir afterwards."""
    stage1 = tmp_path / "stage1"
    (stage1 / "root/etc").mkdir(parents=True)
    (stage1 / "root/etc/group").write_text("root:x:0:\nsystemd-journal:x:101:\n")
    (stage1 / "vmlinuz").write_text("")
    (tmp_path / "app/bin").mkdir(parents=True)
    seen = tmp_path / "seen"
    pod_file = tmp_path / "pod.json"
    pod_file.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"}}]}))
    # The stand-in hypervisor sees the pod's root as QEMU would (in kvmpod run's mount namespace).
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / "generator")!r})
from kvmpod.host.run import Stage1, run_pod
from kvmpod.pod.manifest import parse_pod_manifest
data = open({str(pod_file)!r}, "rb").read()
look = lambda pod: ["sh", "-c", "stat -c '%a %g' " + pod.rootfs + "/var/log/journal > {seen} 2>&1; exit 0"]
run_pod(pod_model=parse_pod_manifest(json.loads(data)), manifest_bytes=data, images={{"web": {str(tmp_path / "app")!r}}},
        networks=None, pod_uuid={UUID!r}, stage1=Stage1({str(stage1 / "root")!r}, {str(stage1 / "vmlinuz")!r}, None),
        keep={keep}, argv_for=look, err=open("/dev/null", "w"))
"""
    env = dict(os.environ, KVMPOD_DIR=str(tmp_path / "state"))
    ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    upper = tmp_path / "state/pods" / UUID / "stage1/upper"
    if keep:
        assert seen.read_text() == "2755 101\n"
        assert (upper / "var/log/journal").is_dir()
    else:
        assert "No such file or directory" in seen.read_text()
    assert not (stage1 / "root/var").exists()  # the cached stage1 is never written
