"""The generated QEMU argv, started by the real QEMU: paused (-S, so no kernel runs), then quit
over the monitor. QEMU parses every -fsdev/-device/-netdev/-chardev and opens every share, so a
mis-escaped comma or a bad option fails here.

qemu-system-x86_64 (Debian `qemu-system-x86`) is required: without it this proves nothing, so a
missing binary is a FAILURE, not a skip.
"""

import os
import shutil
import subprocess

import pytest
from helpers import UUID, empty, host, pod

from kvmpod.host.hypervisor.argv import HostSettings, build_argv, hypervisor_part
from kvmpod.host.net.nics import parse_networks
from kvmpod.host.hypervisor.resources import Resources
from kvmpod.pod.staging import staged_host_volumes

INSTALL_HINT = "install it: apt-get install qemu-system-x86"


def qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        pytest.fail(f"qemu-system-x86_64 not found: {INSTALL_HINT}")
    return path


def without_kernel(argv: list[str]) -> list[str]:
    """The generated argv minus -kernel/-initrd/-append: with -S nothing boots, so none is needed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-kernel", "-initrd", "-append"):
            skip = True
        else:
            out.append(arg)
    return out


def run_paused(argv: list[str]) -> subprocess.CompletedProcess:
    """QEMU paused; a supervised argv (staged volumes) runs through kvmpod.host.hypervisor.supervisor for real."""
    hypervisor = hypervisor_part(argv)
    command = argv[:len(argv) - len(hypervisor)] + [qemu()] + without_kernel(hypervisor)[1:] + ["-S", "-monitor", "stdio"]
    try:
        return subprocess.run(command, input="quit\n", capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU did not quit within 60 s: {command}")


def hostile_tree(tmp_path) -> tuple[str, str, str]:
    root = tmp_path / "stage1 root,with comma"
    db = tmp_path / "data, with spaces,and,commas"
    logs = tmp_path / "logs=eq"
    for d in (root, db, logs):
        d.mkdir()
    return str(root), str(db), str(logs)


def generated(tmp_path, networks=()) -> list[str]:
    root, db, logs = hostile_tree(tmp_path)
    # db is read-only: exported from the supervisor's staged bind; logs, writable, from its own path.
    p = pod([host("db", logs, readOnly=True), empty("scratch"), host("logs", db)])
    settings = HostSettings(hypervisor="qemu", pod_uuid=UUID, rootfs=root, kernel="/nonexistent/vmlinuz",
                            console=f"file:{tmp_path}/console, log", accel="tcg")
    return build_argv(p, staged_host_volumes(p), networks, settings, Resources(cpus=1, memory_mib=512))


def test_real_qemu_accepts_the_generated_argv_with_commas_and_spaces(tmp_path):
    argv = generated(tmp_path)
    assert "path=" + str(tmp_path) + "/data,, with spaces,,and,,commas" in " ".join(argv)
    result = run_paused(argv)
    assert result.returncode == 0, f"QEMU refused the argv {argv}:\n{result.stderr}"
    assert result.stderr == ""
    assert os.path.exists(f"{tmp_path}/console, log")  # the console file, comma and all


def test_real_qemu_accepts_the_generated_tap_nics(tmp_path):
    if os.geteuid() != 0 or not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        pytest.skip("creating tap devices needs root and /dev/net/tun")
    networks = parse_networks([
        {"tap": f"kvt{os.getpid() % 10000}a", "hostIP": "10.251.0.1", "guestIP": "10.251.0.2", "prefix": 24},
        {"tap": f"kvt{os.getpid() % 10000}b", "hostIP": "10.252.0.1", "guestIP": "10.252.0.2", "prefix": 24},
    ])
    argv = generated(tmp_path, networks)
    result = run_paused(argv)
    assert result.returncode == 0, f"QEMU refused the argv {argv}:\n{result.stderr}"
    assert result.stderr == ""


def test_real_qemu_rejects_what_kvmpod_must_never_emit(tmp_path):
    """The check is real: an undoubled comma in a path makes QEMU fail."""
    root, db, _ = hostile_tree(tmp_path)
    argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none",
            "-fsdev", f"local,id=vol0,path={db},security_model=none",
            "-device", "virtio-9p-pci,fsdev=vol0,mount_tag=db"]
    assert run_paused(argv).returncode != 0


def test_real_qemu_accepts_kvmpod_runs_pod_devices(tmp_path, monkeypatch):
    """--pod-dir: the pod share, the apps' serial port and the enter port (sockets QEMU serves), the
    console as kvmpod run boots it (a socket too) and the QMP socket, with a comma in the path."""
    import tempfile

    from kvmpod.host.pods import pod_dirs as pods

    run = tempfile.mkdtemp(prefix="kp-")  # short: a socket path must fit 108 bytes
    monkeypatch.setattr(pods, "QMP_DIR", run)
    pod_dir = tmp_path / "pods, here" / UUID
    (pod_dir / "share/apps").mkdir(parents=True)
    root, _, _ = hostile_tree(tmp_path)
    p = pod([])
    settings = HostSettings(hypervisor="qemu", pod_uuid=UUID, rootfs=root, kernel="/nonexistent/vmlinuz",
                            console=f"socket:{run}/{UUID}.console", accel="tcg", pod_dir=str(pod_dir))
    argv = build_argv(p, staged_host_volumes(p), (), settings, Resources(cpus=1, memory_mib=512))
    assert "kvmpod.pod_share=kvmpod_pod" in argv[argv.index("-append") + 1]
    assert "virtserialport,bus=kvmpod-serial.0,chardev=enter,name=kvmpod.enter" in argv
    result = run_paused(argv)
    assert result.returncode == 0, f"QEMU refused the argv {argv}:\n{result.stderr}"
    assert result.stderr == ""
    assert not (pod_dir / "apps.log").exists()  # QEMU writes no log file: kvmpod run does, capped
    # QEMU served its ports (it removes the sockets as it exits: they were there while it ran)
    assert "apps.log" not in " ".join(argv)
