"""Transports (issues 9, 13, 12): lkvm as kvmtool really behaves, the safe 9p default, refusals,
virtio-fs argv, and what `explain` says. kvmtool cannot run here (no VT-x), so its facts are data
with their source references, checked against kvmtool's source when the mirror is present."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import UUID, empty, host, pod

from kvmpod.host.hypervisor.argv import (LKVM_DISK_PREFIX, LKVM_HOME, LKVM_INITRD_PREFIX, MAX_KERNEL_CMDLINE_CHARS,
                              HostSettings, build_argv, hypervisor_part)
from kvmpod.host.hypervisor.launch import launch_environment
from kvmpod.host.hypervisor.resources import Resources
from kvmpod.host.hypervisor.volumes import check_xattr_support
from kvmpod.pod.problems import InvalidInput
from kvmpod.pod.staging import staged_host_volumes

REPO = Path(__file__).resolve().parents[3]
KVMTOOL = Path("/work/.mirror/kvmtool+kvmtool/repo")
RES = Resources(cpus=1, memory_mib=512)
RO_ONLY = pod([host("db", "/srv/db", readOnly=True)])
RW = pod([host("db", "/srv/db", readOnly=True), host("out", "/srv/out")])


def build(p=RO_ONLY, **kw) -> list[str]:
    settings = HostSettings(**{"hypervisor": "qemu", "pod_uuid": UUID, "rootfs": "/stage1", "kernel": "/vmlinuz",
                               "python": "/usr/bin/python3",
                               "accel": "auto" if kw.get("hypervisor") == "lkvm" else "tcg", **kw})
    return build_argv(p, staged_host_volumes(p), (), settings, RES)


def refused(p=RO_ONLY, **kw) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as error:
        build(p, **kw)
    return [(problem.field, problem.message) for problem in error.value.problems]


# ---------------------------------------------------------------- kvmtool's kernel command line

# kvmtool b48735e: x86/kvm.c kvm__arch_set_cmdline (no video), builtin-run.c kvm_run_set_real_cmdline
# (" console=hvc0" for --console virtio; for --disk DIR, using_rootfs without custom_rootfs, its 9p
# root flags; then " " and --params).
KVMTOOL_STRINGS = {
    "x86/kvm.c": ['"noapic noacpi pci=conf1 reboot=k panic=1 i8042.direct=1 "', '"i8042.dumbkbd=1 i8042.nopnp=1"',
                  '" earlyprintk=serial i8042.noaux=1"'],
    "builtin-run.c": ['" console=hvc0"', '" rw rootflags=trans=virtio,version=9p2000.L,cache=loose rootfstype=9p"',
                      'static char real_cmdline[2048]', 'strcat(real_cmdline, " ");'],
}


def test_lkvm_prefixes_are_kvmtools_132_and_201_bytes():
    assert len(LKVM_INITRD_PREFIX) == 132 and len(LKVM_DISK_PREFIX) == 201
    assert LKVM_DISK_PREFIX == ("noapic noacpi pci=conf1 reboot=k panic=1 i8042.direct=1 i8042.dumbkbd=1 "
                                "i8042.nopnp=1 earlyprintk=serial i8042.noaux=1 console=hvc0 rw "
                                "rootflags=trans=virtio,version=9p2000.L,cache=loose rootfstype=9p ")
    assert LKVM_DISK_PREFIX.startswith(LKVM_INITRD_PREFIX[:-1])


@pytest.mark.skipif(not KVMTOOL.is_dir(), reason="kvmtool's source mirror is not on this machine")
def test_lkvm_prefix_strings_are_in_kvmtools_source():
    for path, strings in KVMTOOL_STRINGS.items():
        source = subprocess.run(["git", f"--git-dir={KVMTOOL}", "show", f"HEAD:{path}"], capture_output=True,
                                text=True, check=True).stdout
        for s in strings:
            assert s in source, (path, s)
    joined = "".join(s.strip('"') for s in KVMTOOL_STRINGS["x86/kvm.c"]) + " console=hvc0"
    assert LKVM_INITRD_PREFIX == joined + " "


def test_the_limit_is_2046_bytes_with_lkvms_prefix_on_both_paths():
    assert MAX_KERNEL_CMDLINE_CHARS == 2046
    for initrd, prefix in ((None, LKVM_DISK_PREFIX), ("/initrd.img", LKVM_INITRD_PREFIX)):
        base = hypervisor_part(build(hypervisor="lkvm", initrd=initrd))
        params = base[base.index("--params") + 1]
        room = MAX_KERNEL_CMDLINE_CHARS - len(prefix) - len(params) - 1
        build(hypervisor="lkvm", initrd=initrd, extra_kernel_params="x" * room)  # exactly fits
        assert refused(hypervisor="lkvm", initrd=initrd, extra_kernel_params="x" * (room + 1))[0][0] == \
            "kernel command line"


# ---------------------------------------------------------------- lkvm

def test_lkvm_without_networks_says_mode_none_and_runs_with_its_home(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    argv = build(hypervisor="lkvm")
    assert argv[:5] == ["/usr/bin/python3", "-m", "kvmpod.host.hypervisor.supervisor", "--home", LKVM_HOME]
    assert hypervisor_part(argv)[-2:] == ["--network", "mode=none"]
    assert launch_environment("lkvm") == {"HOME": LKVM_HOME} and launch_environment("qemu") == {}


def test_lkvm_read_only_volume_is_exported_from_the_read_only_staged_bind():
    argv = build(hypervisor="lkvm")
    assert argv[argv.index("--mount"):argv.index("--mount") + 4] == [
        "--mount", "rbind,ro", "/srv/db", "/run/kvmpod/staging/vol0"]
    assert "--9p=/run/kvmpod/staging/vol0,db" in argv and not any(a.startswith("--9p=/srv/db") for a in argv)


def test_lkvm_refuses_security_model_and_virtiofs():
    [(field, message)] = refused(hypervisor="lkvm", security_model="mapped-xattr")
    assert field == "--security-model" and "lkvm's 9p server has no security models" in message
    [(field, message)] = refused(hypervisor="lkvm", share="virtiofs")
    assert field == "--share" and "lkvm has no virtio-fs device" in message


def test_writable_volumes_over_lkvm_or_virtiofs_need_the_explicit_unsafe_option():
    for kw in ({"hypervisor": "lkvm"}, {"share": "virtiofs"}):
        [(field, message)] = refused(RW, **kw)
        assert field == "volumes(out).readOnly"
        assert "setuid-root" in message and "--unsafe-volume-writes" in message
        build(RW, unsafe_volume_writes=True, **kw)
        build(RO_ONLY, **kw)  # read-only volumes are safe over any transport
    [(field, _)] = refused(RW, unsafe_volume_writes=True)  # QEMU's 9p: say --security-model none instead
    assert field == "--unsafe-volume-writes"


WRITABLE = ("host volume 'out' is writable and {} applies the guest's owners and modes to the host files, so "
            "root in the pod could leave setuid-root programs or device nodes there; make it readOnly, use QEMU's "
            "9p (--hypervisor qemu --share 9p), or accept that with --unsafe-volume-writes")


@pytest.mark.parametrize("p, kw, expected", [
    (RO_ONLY, {"share": "nfs"}, [("--share", "is 'nfs'; use 9p, virtiofs")]),
    (RO_ONLY, {"hypervisor": "lkvm", "share": "virtiofs"},
     [("--share", "lkvm has no virtio-fs device; use --share 9p or --hypervisor qemu")]),
    (RO_ONLY, {"security_model": "bogus"},
     [("--security-model", "is 'bogus'; use mapped-xattr, mapped-file, passthrough, none")]),
    (RO_ONLY, {"hypervisor": "lkvm", "security_model": "none"},
     [("--security-model", "lkvm's 9p server has no security models: it applies the guest's owners and modes to "
                           "the host files (like passthrough) and returns a failed chown to the guest; drop the "
                           "option, and see --unsafe-volume-writes for writable volumes")]),
    (RO_ONLY, {"share": "virtiofs", "security_model": "none"},
     [("--security-model", "is a 9p option; virtiofsd applies the guest's owners and modes to the host files: "
                           "see --unsafe-volume-writes")]),
    (RO_ONLY, {"unsafe_volume_writes": True},
     [("--unsafe-volume-writes", "is for lkvm's 9p and virtio-fs; with QEMU's 9p say --security-model none "
                                 "(or passthrough) instead")]),
    (RW, {"hypervisor": "lkvm"}, [("volumes(out).readOnly", WRITABLE.format("lkvm's 9p server"))]),
    (RW, {"share": "virtiofs"}, [("volumes(out).readOnly", WRITABLE.format("virtiofsd"))]),
], ids=["share", "lkvm-virtiofs", "model", "lkvm-model", "virtiofs-model", "unsafe-on-qemu-9p", "lkvm-rw",
        "virtiofs-rw"])
def test_each_transport_refusal_names_the_field_and_the_fix(p, kw, expected):
    assert refused(p, **kw) == expected


def test_lkvm_pod_of_kvmpod_run_adds_the_pod_share_to_everything_else(tmp_path: Path):
    argv = hypervisor_part(build(RO_ONLY, hypervisor="lkvm", pod_dir=str(tmp_path / "pod")))
    plain = hypervisor_part(build(RO_ONLY, hypervisor="lkvm"))
    params = argv[argv.index("--params") + 1]
    assert params == plain[plain.index("--params") + 1] + " kvmpod.pod_share=kvmpod_pod"
    assert params.startswith("console=hvc0 panic=1 ")
    assert [a for a in argv if a.startswith("--9p=")] == (
        [a for a in plain if a.startswith("--9p=")] + [f"--9p={tmp_path}/pod/share,kvmpod_pod"])
    assert argv[0] == plain[0] and "--kernel" in argv and "--mem" in argv


def test_the_xattr_probe_tells_no_xattrs_from_a_probe_that_failed(tmp_path: Path, monkeypatch):
    import errno

    from kvmpod.host.hypervisor import volumes

    written = []
    monkeypatch.setattr(os, "setxattr", lambda path, name, value: written.append((path, name, value)))
    monkeypatch.setattr(os, "removexattr", lambda path, name: None)
    assert volumes._has_user_xattrs(str(tmp_path)) is True
    assert written == [(str(tmp_path), "user.kvmpod.probe", b"1")]
    for number in (errno.ENOTSUP, errno.EOPNOTSUPP):
        monkeypatch.setattr(os, "setxattr", lambda *a, n=number: (_ for _ in ()).throw(OSError(n, os.strerror(n))))
        assert volumes._has_user_xattrs(str(tmp_path)) is False
    monkeypatch.setattr(os, "setxattr", lambda *a: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(OSError):
        volumes._has_user_xattrs(str(tmp_path))


def test_a_volume_that_cannot_be_probed_is_named_with_the_reason_and_the_others_still_are(tmp_path: Path):
    p = pod([host("a", str(tmp_path / "a")), host("b", str(tmp_path / "b"))])

    def probe(path: str) -> bool:
        raise OSError(2, "No such file or directory")

    with pytest.raises(InvalidInput) as raised:
        check_xattr_support(p, staged_host_volumes(p), "mapped-xattr", probe)
    assert [(x.field, x.message) for x in raised.value.problems] == [
        ("volumes[0].source", f"cannot probe {str(tmp_path / 'a')!r} for user extended attributes: "
                              "No such file or directory"),
        ("volumes[1].source", f"cannot probe {str(tmp_path / 'b')!r} for user extended attributes: "
                              "No such file or directory")]


# ---------------------------------------------------------------- QEMU 9p: the safe default

def test_qemu_volumes_default_to_mapped_xattr_and_the_root_share_keeps_none():
    argv = build(RW)
    fsdevs = [a for a in argv if a.startswith("local,")]
    assert fsdevs == ["local,id=root,path=/stage1,security_model=none,multidevs=remap",
                      "local,id=vol0,path=/run/kvmpod/staging/vol0,security_model=mapped-xattr,multidevs=remap,readonly=on",
                      "local,id=vol1,path=/srv/out,security_model=mapped-xattr,multidevs=remap"]
    assert "local,id=vol1,path=/srv/out,security_model=none,multidevs=remap" in build(RW, security_model="none")


def test_qemu_without_staging_is_not_supervised():
    assert build(pod([host("out", "/srv/out")]))[0] == "qemu-system-x86_64"
    assert build(pod([host("out", "/srv/out", recursive=False)]))[:7] == [
        "/usr/bin/python3", "-m", "kvmpod.host.hypervisor.supervisor", "--mount", "bind", "/srv/out", "/run/kvmpod/staging/vol0"]


def test_a_volume_without_user_xattrs_is_refused_with_the_way_out():
    p = pod([host("db", "/srv/db", readOnly=True), host("out", "/srv/out"), empty("e")])
    seen = []

    def no_xattrs(path: str) -> bool:
        seen.append(path)
        return False

    with pytest.raises(InvalidInput) as error:
        check_xattr_support(p, staged_host_volumes(p), "mapped-xattr", no_xattrs)
    [problem] = error.value.problems
    assert problem.field == "volumes[1].source" and "--security-model mapped-file" in problem.message
    assert seen == ["/srv/out"]  # read-only volumes are never written
    check_xattr_support(p, staged_host_volumes(p), "mapped-file", no_xattrs)


def test_the_real_xattr_probe_leaves_nothing_behind(tmp_path: Path):
    p = pod([host("out", str(tmp_path))])
    check_xattr_support(p, staged_host_volumes(p), "mapped-xattr")  # ext4/tmpfs here: supported
    assert os.listxattr(tmp_path) == []


# ---------------------------------------------------------------- virtio-fs

def test_virtiofs_argv_has_shared_memory_a_device_per_volume_and_tells_the_guest():
    argv = build(share="virtiofs")
    assert argv[:9] == ["/usr/bin/python3", "-m", "kvmpod.host.hypervisor.supervisor", "--mount", "rbind,ro", "/srv/db",
                        "/run/kvmpod/staging/vol0", "--virtiofsd", "/usr/lib/qemu/virtiofsd"]
    assert argv[9:11] == ["/run/kvmpod/staging/vfs0.sock", "/run/kvmpod/staging/vol0"]
    qemu = hypervisor_part(argv)
    assert qemu[qemu.index("-machine") + 1] == "q35,memory-backend=kvmpod-mem"
    assert "memory-backend-memfd,id=kvmpod-mem,size=512M,share=on" in qemu
    assert qemu[qemu.index("-chardev", qemu.index("-serial")):][:4] == [
        "-chardev", "socket,id=vfs0,path=/run/kvmpod/staging/vfs0.sock",
        "-device", "vhost-user-fs-pci,chardev=vfs0,tag=db"]
    assert "kvmpod.share=virtiofs" in qemu[qemu.index("-append") + 1].split()
    assert not any(a.startswith("local,id=vol") for a in qemu)  # no 9p export of volumes


def test_security_model_is_refused_with_virtiofs():
    [(field, _)] = refused(share="virtiofs", security_model="none")
    assert field == "--security-model"


# ---------------------------------------------------------------- CLI

def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], env=env, capture_output=True, text=True)


@pytest.fixture
def tree(tmp_path: Path) -> list[str]:
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1/vmlinuz").write_text("")
    (tmp_path / "stage1/initrd.img").write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "pod.json").write_text(json.dumps({
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                  "mounts": [{"volume": "out", "path": "/out"}]}],
        "volumes": [{"name": "out", "kind": "host", "source": str(tmp_path / "out")}]}))
    return ["--manifest", str(tmp_path / "pod.json"), "--rootfs", str(tmp_path / "stage1"), "--uuid", UUID]


def test_cli_lkvm_takes_the_stage1_initrd_and_refuses_a_writable_volume_in_one_line(tmp_path, tree):
    proc = _cli(tmp_path, "args", "--hypervisor", "lkvm", *tree)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kvmpod: volumes(out).readOnly: host volume")
    proc = _cli(tmp_path, "args", "--hypervisor", "lkvm", *tree, "--unsafe-volume-writes", "--format", "json")
    argv = json.loads(proc.stdout)
    assert argv[argv.index("--initrd") + 1] == str(tmp_path / "stage1/initrd.img")
    proc = _cli(tmp_path, "args", "--hypervisor", "lkvm", *tree, "--security-model", "none")
    assert proc.returncode == 2 and "kvmpod: --security-model: lkvm's 9p server has no security models" in proc.stderr


def test_cli_explain_is_honest_about_lkvm(tmp_path, tree):
    proc = _cli(tmp_path, "explain", "--hypervisor", "lkvm", *tree, "--unsafe-volume-writes")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("## note: ")]
    assert any("lkvm writes 132 bytes of its own before --params" in n for n in notes), notes
    assert any("lkvm's 9p server has no read-only option" in n for n in notes), notes
    assert any(f"HOME={LKVM_HOME}" in n and "mode=none" in n for n in notes), notes
    (tmp_path / "stage1/initrd.img").unlink()
    proc = _cli(tmp_path, "explain", "--hypervisor", "lkvm", *tree, "--unsafe-volume-writes")
    assert any("must have virtio-pci, 9p and 9pnet_virtio built in" in line for line in proc.stdout.splitlines())
    assert "lkvm writes 201 bytes" in proc.stdout


def test_cli_help_says_what_the_unsafe_options_allow(tmp_path):
    text = " ".join(_cli(tmp_path, "args", "--help").stdout.split()).replace("- ", "-")  # argparse wraps at "-"
    assert "UNSAFE: apply the guest's owners and modes to the host files" in text
    assert "root in the pod can then leave setuid-root programs, device nodes and FIFOs" in text


def test_cli_run_under_systemd_gives_lkvms_transient_unit_a_home(tmp_path, tree, monkeypatch, capsys):
    """kvmtool fails without HOME ("bind: No such file or directory"); a unit without User= has none."""
    started = []
    monkeypatch.setitem(sys.modules, "pystemd", type(sys)("pystemd"))
    monkeypatch.setitem(sys.modules, "pystemd.run", lambda cmd, **options: started.append((cmd, options)))
    import kvmpod.host.cli as cli

    monkeypatch.setattr(cli, "host_runs_systemd", lambda: True)
    monkeypatch.delenv("PYTHONPATH", raising=False)  # main() exports this checkout's for its children
    status = cli.main(["run", "--hypervisor", "lkvm", *tree, "--unsafe-volume-writes"])
    assert status == 0, capsys.readouterr().err
    [(cmd, options)] = started
    assert options["env"] == {"HOME": LKVM_HOME, "PYTHONPATH": str(REPO / "generator")}
    assert options["slice_"] == b"machine.slice"
    assert cmd[1:5] == [b"-m", b"kvmpod.host.hypervisor.supervisor", b"--home", LKVM_HOME.encode()]
    assert b"lkvm" in cmd
