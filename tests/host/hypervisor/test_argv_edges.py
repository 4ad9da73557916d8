"""Host argv at its edges, from the mutation run's survivors (tests/mutation/README.md): the QEMU
console on stdio, every settings error word for word, the kernel command line's 2,048-byte limit
counted as each hypervisor counts it, lkvm with an initrd whole, 9p tag limits, the security model
of the volumes, and accelerator detection on the real /sys/module path."""

import pytest
from helpers import UUID, host, pod

from kvmpod.host.hypervisor.argv import (EXTRA_KERNEL_PARAMS_ENV, MAX_KERNEL_CMDLINE_CHARS, HostSettings, lkvm_cmdline_prefix,
                              build_argv, detect_accel, kernel_params)
from kvmpod.host.hypervisor.resources import Resources
from kvmpod.host.hypervisor.volumes import lkvm_9p_args, qemu_9p_args, qemu_volume_args
from kvmpod.pod.problems import InvalidInput
from kvmpod.pod.staging import staged_host_volumes

POD = pod([host("db", "/srv/db", readOnly=True), host("logs", "/srv/logs")])
RES = Resources(cpus=1, memory_mib=512)


def settings(**kw) -> HostSettings:
    return HostSettings(**{"hypervisor": "qemu", "pod_uuid": UUID, "rootfs": "/var/lib/kvmpod/stage1",
                           "kernel": "/boot/vmlinuz", **kw})


def argv(p=POD, **kw) -> list[str]:
    return build_argv(p, staged_host_volumes(p), (), settings(**kw), RES, lambda: "tcg")


def refusal(p=POD, **kw) -> str:
    with pytest.raises(InvalidInput) as error:
        argv(p, **kw)
    return str(error.value)


def test_qemu_console_on_stdio():
    args = argv(console="stdio")
    assert args[args.index("-chardev") + 1] == "stdio,id=console"


@pytest.mark.parametrize("kw, message", [
    ({"hypervisor": "xen"}, "--hypervisor: is 'xen'; use lkvm or qemu"),
    ({"security_model": "mapped"}, "--security-model: is 'mapped'; use mapped-xattr, mapped-file, passthrough, none"),
    ({"accel": "hvf"}, "--accel: is 'hvf'; use auto, kvm, tcg"),
    ({"hypervisor": "lkvm", "accel": "tcg", "unsafe_volume_writes": True}, "--accel: lkvm runs only on KVM; use --hypervisor qemu for TCG"),
    ({"root_tag": "/dev/root"}, "--root-tag: '/dev/root' cannot be the root's 9p tag: give 1-31 bytes without "
                                "spaces, quotes, \",\" or \"=\", not starting with /dev/ (Debian's initramfs "
                                "would wait for a block device)"),
    ({"root_tag": "db"}, "--root-tag: 'db' is also the 9p tag of volume 'db'; choose another root tag, "
                         "e.g. --root-tag kvmpod_root"),
    ({"console": "file:"}, "--console: is 'file:'; use stdio, file:PATH or socket:PATH"),
    ({"hypervisor": "lkvm", "console": "file:/x", "unsafe_volume_writes": True}, "--console: lkvm writes the guest console to its standard "
                                                   "output; redirect that instead of file:PATH"),
    ({"extra_kernel_params": "a\nb"}, f"{EXTRA_KERNEL_PARAMS_ENV}: contains a line break or NUL; give one line"),
    ({"hypervisor": "lkvm", "rootfs": "/a,b", "unsafe_volume_writes": True}, "--rootfs: '/a,b' contains a comma, which lkvm's --disk/--9p "
                                               "cannot carry; rename it or use QEMU"),
    ({"kernel": "/k\n"}, "--kernel: '/k\\n' contains a line break or NUL; rename it"),
    ({"initrd": "/i\0"}, "--initrd: '/i\\x00' contains a line break or NUL; rename it"),
])
def test_each_settings_error_word_for_word(kw, message):
    assert refusal(**kw) == message


@pytest.mark.parametrize("tag, ok", [("t" * 31, True), ("t" * 32, False), ("", False), ("a b", False),
                                     ('a"b', False), ("a,b", False), ("a=b", False)])
def test_root_tag_limits(tag, ok):
    if ok:
        assert f"mount_tag={tag}" in " ".join(argv(root_tag=tag))
    else:
        assert refusal(root_tag=tag).startswith(f"--root-tag: {tag!r} cannot be the root's 9p tag")


def test_every_settings_problem_is_reported_at_once():
    assert refusal(hypervisor="lkvm", accel="tcg", console="file:/x", unsafe_volume_writes=True).splitlines() == [
        "--accel: lkvm runs only on KVM; use --hypervisor qemu for TCG",
        "--console: lkvm writes the guest console to its standard output; redirect that instead of file:PATH"]


def _padding(hypervisor: str, initrd: str | None, total: int) -> str:
    """Extra kernel parameters making the command line `total` characters as the x86 kernel gets it:
    what lkvm writes before kvmpod's part (lkvm_cmdline_prefix; nothing for QEMU) and kvmpod's part."""
    s = settings(hypervisor=hypervisor, initrd=initrd, extra_kernel_params="x")
    base = kernel_params(s, ())
    prefix = lkvm_cmdline_prefix(s) if hypervisor == "lkvm" else ""
    return "x" * (total - len((prefix + base).encode()) + 1)  # base ends in " x", which the padding replaces


@pytest.mark.parametrize("hypervisor, initrd, name", [("qemu", None, "QEMU"), ("qemu", "/boot/initrd", "QEMU"),
                                                       ("lkvm", None, "lkvm"), ("lkvm", "/boot/initrd", "lkvm")])
def test_kernel_command_line_at_the_x86_limit_passes_and_one_more_is_refused(hypervisor, initrd, name):
    kw = {"hypervisor": hypervisor, "initrd": initrd, "accel": "kvm" if hypervisor == "lkvm" else "auto",
          "unsafe_volume_writes": hypervisor == "lkvm"}
    args = argv(extra_kernel_params=_padding(hypervisor, initrd, MAX_KERNEL_CMDLINE_CHARS), **kw)
    params = args[args.index("--params" if hypervisor == "lkvm" else "-append") + 1]
    assert params.endswith("x" * 100)
    assert refusal(extra_kernel_params=_padding(hypervisor, initrd, MAX_KERNEL_CMDLINE_CHARS + 1), **kw) == (
        f"kernel command line: {MAX_KERNEL_CMDLINE_CHARS + 1} bytes with what {name} adds, over the "
        f"{MAX_KERNEL_CMDLINE_CHARS} the x86 kernel gets; shorten {EXTRA_KERNEL_PARAMS_ENV} or use fewer networks")


def test_lkvm_with_initrd_whole_argv():
    """lkvm runs under kvmpod's supervisor (its HOME, the read-only volume's staged bind), boots the
    stage1 initrd with the 9p root, and gets no NIC it was not asked for (issue 9)."""
    args = argv(hypervisor="lkvm", accel="kvm", initrd="/boot/initrd.img", unsafe_volume_writes=True)
    assert args[1:args.index("--") + 1] == [
        "-m", "kvmpod.host.hypervisor.supervisor", "--home", "/run/kvmpod/lkvm",
        "--mount", "rbind,ro", "/srv/db", "/run/kvmpod/staging/vol0", "--"]
    assert args[args.index("--") + 1:] == [
        "lkvm", "run",
        "--name", f"kvmpod-{UUID}",
        "--cpus", "1",
        "--mem", "512",
        "--console", "virtio",
        "--kernel", "/boot/vmlinuz",
        "--initrd", "/boot/initrd.img",
        "--9p=/var/lib/kvmpod/stage1,rootfs",
        "--params", "console=hvc0 panic=1 root=rootfs rootfstype=9p "
                    "rootflags=trans=virtio,version=9p2000.L,cache=loose,msize=262144 rw",
        "--9p=/run/kvmpod/staging/vol0,db",
        "--9p=/srv/logs,logs",
        "--network", "mode=none",
    ]


def test_security_model_reaches_the_root_and_every_volume():
    args = argv(security_model="passthrough")
    fsdevs = [args[i + 1] for i, a in enumerate(args) if a == "-fsdev"]
    # The stage1 root is kvmpod's own copy: always security_model=none; volumes take the option.
    assert fsdevs == ["local,id=root,path=/var/lib/kvmpod/stage1,security_model=none,multidevs=remap",
                      "local,id=vol0,path=/run/kvmpod/staging/vol0,security_model=passthrough,multidevs=remap,"
                      "readonly=on",
                      "local,id=vol1,path=/srv/logs,security_model=passthrough,multidevs=remap"]
    assert qemu_volume_args(staged_host_volumes(POD))[1] == ("local,id=vol0,path=/run/kvmpod/staging/vol0,"
                                                             "security_model=mapped-xattr,multidevs=remap,readonly=on")


def test_qemu_9p_tag_limit_and_unknown_model():
    assert qemu_9p_args("v", "/p", "t" * 31, "none", read_only=False)[3] == f"virtio-9p-pci,fsdev=v,mount_tag={'t' * 31}"
    with pytest.raises(ValueError, match=f"9p tag '{'t' * 32}' is over 31 bytes, which QEMU rejects"):
        qemu_9p_args("v", "/p", "t" * 32, "none", read_only=False)
    with pytest.raises(ValueError, match="unknown 9p security model 'mapped'"):
        qemu_9p_args("v", "/p", "t", "mapped", read_only=False)


def test_lkvm_reports_every_volume_with_a_comma_by_its_field():
    p = pod([host("a", "/srv/a,1"), host("b", "/srv/b"), host("c", "/srv/c,2")])
    with pytest.raises(InvalidInput) as error:
        lkvm_9p_args(p, staged_host_volumes(p))
    assert [str(problem).split(":")[0] for problem in error.value.problems] == ["volumes[0].source", "volumes[2].source"]


def test_detect_accel_reads_the_real_sys_module_by_default(fs):
    fs.create_dir("/sys/module/kvm_amd")
    assert detect_accel() == "kvm"
    fs.create_dir("/sys/module/kvm_pvm")
    assert detect_accel() == "tcg"


def test_an_app_volume_is_named_by_its_mount_field():
    app = {"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
           "mounts": [{"volume": "v", "path": "/a"},
                      {"volume": "w", "path": "/b", "appVolume": host("w", "/srv/w,2")}]}
    p = pod([host("v", "/srv/v"), host("w", "/srv/w")], [app])
    with pytest.raises(InvalidInput) as error:
        lkvm_9p_args(p, staged_host_volumes(p))
    assert str(error.value) == ("apps[0].mounts[1].appVolume.source: '/srv/w,2' contains a comma, which lkvm's "
                                "--9p cannot carry (it splits the path there); rename the directory or use QEMU")


def test_an_x_is_an_ordinary_character_in_tags_parameters_and_paths():
    args = argv(root_tag="rootX", extra_kernel_params="X=1", kernel="/boot/vmlinuzX", initrd="/boot/initrdX")
    assert "virtio-9p-pci,fsdev=root,mount_tag=rootX" in args
    assert args[args.index("-append") + 1].endswith(" X=1")
    assert args[args.index("-kernel") + 1] == "/boot/vmlinuzX"


def test_networks_count_towards_the_pci_devices_too():
    from kvmpod.host.net.nics import parse_networks

    volumes = [host(f"v{i}", f"/srv/v{i}") for i in range(20)]
    nets = parse_networks([{"tap": f"kvmpod{i}", "hostIP": f"10.{i}.0.1", "guestIP": f"10.{i}.0.2", "prefix": 24}
                           for i in range(9)])
    p = pod(volumes)
    with pytest.raises(InvalidInput, match="20 host volumes and 9 networks need 29 PCI devices; kvmpod supports at "
                                           "most 28"):
        build_argv(p, staged_host_volumes(p), nets, settings(), RES, lambda: "tcg")
    assert build_argv(p, staged_host_volumes(p), nets[:8], settings(), RES, lambda: "tcg")
