"""The kvmpod command: argv in three formats, stage, explain; every error one line, exit 2, no stdout."""

import json
import os
import shlex

import pytest
from helpers import UUID

from kvmpod.host.cli import main
from kvmpod.host.net.nics import guest_mac

MANIFEST = {"acKind": "PodManifest", "acVersion": "0.8.11",
            "apps": [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0",
                                             "isolators": [{"name": "resource/memory", "value": {"limit": "1Gi"}},
                                                           {"name": "resource/cpu", "value": {"limit": "1"}}]},
                      "mounts": [{"volume": "data", "path": "/srv"}]}],
            "volumes": [{"name": "data", "kind": "host", "source": "/host/data"}]}
NETWORKS = [{"tap": "kvmpod0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24}]


@pytest.fixture
def tree(fs):
    fs.create_file("/pod.json", contents=json.dumps(MANIFEST))
    fs.create_file("/nets.json", contents=json.dumps(NETWORKS))
    fs.create_file("/stage1/vmlinuz")
    fs.create_dir("/host/data")
    fs.create_dir("/sys/module/kvm_pvm")
    return fs


def run(capsys, *args) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


BASE = ("--manifest", "/pod.json", "--rootfs", "/stage1", "--uuid", UUID)


def test_args_lines_for_qemu(tree, capsys):
    status, out, err = run(capsys, "args", "--hypervisor", "qemu", *BASE, "--networks", "/nets.json",
                           "--format", "lines")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[:12] == ["qemu-system-x86_64", "-name", f"kvmpod-{UUID}", "-machine", "q35",
                          "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m"]
    assert lines[12] == str(1024 + 128)
    assert lines[-2:] == ["-device", f"virtio-net-pci,netdev=net0,mac={guest_mac(UUID, 0)}"]


def test_args_shell_and_json_are_the_same_argv(tree, capsys, monkeypatch):
    monkeypatch.setenv("KVMPOD_EXTRA_KERNEL_PARAMS", "systemd.log_level=debug")
    unsafe = "--unsafe-volume-writes"  # lkvm's 9p: a writable volume needs it (issue 13)
    _, shell, _ = run(capsys, "args", "--hypervisor", "lkvm", *BASE, "--cpus", "3", "--memory", "700", unsafe)
    _, as_json, _ = run(capsys, "args", "--hypervisor", "lkvm", *BASE, "--cpus", "3", "--memory", "700",
                        "--format", "json", unsafe)
    assert shlex.split(shell) == json.loads(as_json)
    argv = json.loads(as_json)
    assert argv[argv.index("--cpus") + 1] == "3" and argv[argv.index("--mem") + 1] == "700"
    assert argv[argv.index("--params") + 1].endswith(" systemd.log_level=debug")
    assert argv[-3:] == ["--9p=/host/data,data", "--network", "mode=none"]  # no networks: no lkvm NIC


@pytest.mark.parametrize("args, line", [
    (("--uuid", "nope"), "kvmpod: --uuid: 'nope' is not a UUID"),
    (("--networks", "/bad-nets.json"), "kvmpod: networks[0].guestIP: 10.1.0.1 is also the host's address"),
    (("--manifest", "/broken.json"), "kvmpod: /broken.json: is not valid JSON"),
    (("--manifest", "/missing.json"), "kvmpod: --manifest: '/missing.json' does not exist"),
    (("--bogus",), "kvmpod: usage: unrecognized arguments: --bogus"),
    (("--cni-result", "/x", "--networks", "/y"), "kvmpod: usage: argument --networks: not allowed with"),
])
def test_errors_are_one_line_on_stderr_exit_2_nothing_on_stdout(tree, capsys, args, line):
    tree.create_file("/broken.json", contents="{")
    tree.create_file("/bad-nets.json", contents=json.dumps([{**NETWORKS[0], "guestIP": "10.1.0.1"}]))
    status, out, err = run(capsys, "args", "--hypervisor", "qemu", *BASE, *args)
    assert (status, out) == (2, "")
    assert err.startswith(line) and err.count("\n") >= 1
    assert all(l.startswith("kvmpod: ") for l in err.splitlines())


def test_missing_host_volume_source(tree, capsys):
    os.rmdir("/host/data")
    status, out, err = run(capsys, "args", "--hypervisor", "qemu", *BASE)
    assert (status, out) == (2, "")
    assert err == ("kvmpod: volumes[0].source: host volume 'data': '/host/data' does not exist or is not a "
                   "directory on this host; create it or fix the path\n")


def test_stage_copies_manifest_and_guest_networks(tree, capsys):
    status, out, err = run(capsys, "stage", *BASE, "--networks", "/nets.json")
    assert (status, err) == (0, "")
    assert out == "/stage1/etc/kvmpod/pod.json\n/stage1/etc/kvmpod/networks.json\n"
    assert open("/stage1/etc/kvmpod/pod.json").read() == json.dumps(MANIFEST)
    assert json.load(open("/stage1/etc/kvmpod/networks.json")) == [
        {"interface": "eth0", "mac": guest_mac(UUID, 0), "address": "10.1.0.2/24", "routes": []}]


def test_stage_refuses_a_symlink_out_of_the_rootfs(tree, capsys):
    tree.create_dir("/etc-of-host")
    tree.create_symlink("/stage1/etc", "/etc-of-host")
    status, out, err = run(capsys, "stage", *BASE)
    assert (status, out) == (2, "")
    assert err.startswith("kvmpod: --rootfs: cannot open 'etc' as a real directory")
    assert os.listdir("/etc-of-host") == []


def test_explain_pairs_host_exports_with_guest_units(tree, capsys):
    status, out, err = run(capsys, "explain", "--hypervisor", "qemu", *BASE, "--networks", "/nets.json")
    assert (status, err) == (0, "")
    assert ("data          local,id=vol0,path=/host/data,security_model=mapped-xattr,multidevs=remap + "
            "virtio-9p-pci,fsdev=vol0,mount_tag=data  mnt-data.mount: What=data Where=/mnt/data") in out
    assert "==> mnt-data.mount <==" in out and "==> kvmpod-network-eth0.service <==" in out
