"""Whole command lines: one pod, one network, exact argv for lkvm and QEMU; resources; limits."""

import pytest
from helpers import UUID, empty, host, pod

from kvmpod.host.hypervisor.argv import (LKVM_DISK_PREFIX, MAX_PCI_DEVICES, HostSettings, build_argv, detect_accel,
                              kernel_params)
from kvmpod.host.net.nics import guest_mac, parse_networks
from kvmpod.host.hypervisor.resources import Resources, app_resources, parse_quantity
from kvmpod.pod.problems import InvalidInput
from kvmpod.pod.staging import staged_host_volumes

POD = pod([host("db", "/srv/db", readOnly=True), empty("scratch"), host("logs", "/srv/logs")])
NETS = parse_networks([{"tap": "kvmpod0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24, "ipMasq": True}])
RES = Resources(cpus=2, memory_mib=640)
ROOTFS_FLAGS = "rootflags=trans=virtio,version=9p2000.L,cache=loose,msize=262144"


PY = "/usr/bin/python3"
SUPERVISOR = [PY, "-m", "kvmpod.host.hypervisor.supervisor"]
RO_BIND = ["--mount", "rbind,ro", "/srv/db", "/run/kvmpod/staging/vol0"]


def settings(**kw) -> HostSettings:
    if kw.get("hypervisor") == "lkvm":
        kw.setdefault("unsafe_volume_writes", True)  # POD's logs volume is writable
    return HostSettings(**{"hypervisor": "qemu", "pod_uuid": UUID, "rootfs": "/var/lib/kvmpod/stage1",
                           "kernel": "/boot/vmlinuz", "python": PY, **kw})


def argv(nets=NETS, p=POD, detect=lambda: "tcg", **kw) -> list[str]:
    return build_argv(p, staged_host_volumes(p), nets, settings(**kw), RES, detect)


def test_lkvm_whole_argv():
    assert argv(hypervisor="lkvm") == [
        *SUPERVISOR, "--home", "/run/kvmpod/lkvm", *RO_BIND, "--",
        "lkvm", "run",
        "--name", f"kvmpod-{UUID}",
        "--cpus", "2",
        "--mem", "640",
        "--console", "virtio",
        "--kernel", "/boot/vmlinuz",
        "--disk", "/var/lib/kvmpod/stage1",
        "--params", f"console=hvc0 panic=1 {ROOTFS_FLAGS} net.ifnames=0 ip=10.1.0.2::10.1.0.1:255.255.255.0::eth0:::",
        "--9p=/run/kvmpod/staging/vol0,db",  # the read-only staged bind: lkvm's 9p has no read-only option
        "--9p=/srv/logs,logs",
        "--network", f"mode=tap,tapif=kvmpod0,host_ip=10.1.0.1,guest_ip=10.1.0.2,guest_mac={guest_mac(UUID, 0)}",
    ]


def test_lkvm_with_initrd_shares_the_root_under_the_root_tag():
    args = argv(hypervisor="lkvm", initrd="/boot/initrd.img", nets=())
    assert args[args.index("--initrd"):args.index("--params") + 2] == [
        "--initrd", "/boot/initrd.img",
        "--9p=/var/lib/kvmpod/stage1,rootfs",
        "--params", f"console=hvc0 panic=1 root=rootfs rootfstype=9p {ROOTFS_FLAGS} rw",
    ]
    assert "--disk" not in args


def test_qemu_whole_argv_tcg():
    assert argv(console="file:/var/log/pod,1.log", initrd="/boot/initrd.img") == [
        *SUPERVISOR, *RO_BIND, "--",
        "qemu-system-x86_64",
        "-name", f"kvmpod-{UUID}",
        "-machine", "q35",
        "-accel", "tcg",
        "-cpu", "max",
        "-smp", "2",
        "-m", "640",
        "-nodefaults",
        "-no-reboot",
        "-display", "none",
        "-chardev", "file,id=console,path=/var/log/pod,,1.log",
        "-serial", "chardev:console",
        "-kernel", "/boot/vmlinuz",
        "-initrd", "/boot/initrd.img",
        "-append", f"console=ttyS0 panic=1 root=rootfs rootfstype=9p {ROOTFS_FLAGS} rw net.ifnames=0 "
                   "ip=10.1.0.2::10.1.0.1:255.255.255.0::eth0:::",
        "-fsdev", "local,id=root,path=/var/lib/kvmpod/stage1,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=rootfs",
        "-fsdev", "local,id=vol0,path=/run/kvmpod/staging/vol0,security_model=mapped-xattr,multidevs=remap,readonly=on",
        "-device", "virtio-9p-pci,fsdev=vol0,mount_tag=db",
        "-fsdev", "local,id=vol1,path=/srv/logs,security_model=mapped-xattr,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=vol1,mount_tag=logs",
        "-netdev", "tap,id=net0,ifname=kvmpod0,script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={guest_mac(UUID, 0)}",
    ]


def test_qemu_uses_kvm_and_the_host_cpu_only_when_detected():
    args = argv(detect=lambda: "kvm")
    assert args[args.index("-accel") + 1] == "kvm" and args[args.index("-cpu") + 1] == "host"
    args = argv(detect=lambda: "kvm", accel="tcg")
    assert args[args.index("-accel") + 1] == "tcg"


@pytest.mark.parametrize("modules, expected", [
    ({"kvm", "kvm_intel"}, "kvm"),
    ({"kvm", "kvm_amd"}, "kvm"),
    ({"kvm", "kvm_pvm"}, "tcg"),             # this machine: software nested KVM
    ({"kvm", "kvm_intel", "kvm_pvm"}, "tcg"),
    (set(), "tcg"),
])
def test_accel_detection(modules, expected):
    assert detect_accel("/sys/module", lambda path: path.rsplit("/", 1)[1] in modules) == expected


def test_extra_kernel_params_come_last():
    assert kernel_params(settings(extra_kernel_params=" systemd.log_level=debug "), ()).endswith(
        "rw systemd.log_level=debug")


def test_kernel_command_line_over_2046_bytes_is_refused():
    with pytest.raises(InvalidInput) as error:
        argv(hypervisor="lkvm", extra_kernel_params="x" * (2046 - len(LKVM_DISK_PREFIX) - 100))
    assert error.value.problems[0].field == "kernel command line"
    argv(hypervisor="qemu", extra_kernel_params="x" * 1800)  # QEMU adds nothing: still fits


@pytest.mark.parametrize("kw, field", [
    ({"root_tag": "/dev/root"}, "--root-tag"),
    ({"root_tag": "db"}, "--root-tag"),          # the tag of a volume
    ({"root_tag": "a" * 32}, "--root-tag"),
    ({"hypervisor": "lkvm", "console": "file:/tmp/x"}, "--console"),
    ({"hypervisor": "lkvm", "accel": "tcg"}, "--accel"),
    ({"hypervisor": "lkvm", "rootfs": "/srv/a,b"}, "--rootfs"),
    ({"security_model": "mapped"}, "--security-model"),
    ({"extra_kernel_params": "a\nb"}, "KVMPOD_EXTRA_KERNEL_PARAMS"),
])
def test_bad_settings_are_named(kw, field):
    with pytest.raises(InvalidInput) as error:
        argv(**kw)
    assert [p.field for p in error.value.problems] == [field]


def test_huge_volume_counts_are_refused_with_a_clear_error():
    many = pod([host(f"v{i}", f"/srv/v{i}") for i in range(10_000)])
    with pytest.raises(InvalidInput) as error:
        argv(p=many)
    [problem] = error.value.problems
    assert problem.field == "volumes" and f"at most {MAX_PCI_DEVICES}" in problem.message
    fits = pod([host(f"v{i}", f"/srv/v{i}") for i in range(MAX_PCI_DEVICES - 1)])
    assert argv(p=fits).count("-fsdev") == MAX_PCI_DEVICES  # the root and every volume


# ---------------------------------------------------------------- resources (rkt 1.30)

def app(name, *isolators):
    return {"name": name, "app": {"exec": ["/bin/x"], "user": "0", "group": "0",
                                  "isolators": [{"name": n, "value": {"limit": v}} for n, v in isolators]}}


def test_resources_sum_app_limits_plus_overhead():
    p = pod([], [app("a", ("resource/memory", "1Gi"), ("resource/cpu", "500m")),
                 app("b", ("resource/memory", "512M"), ("resource/cpu", "1"))])
    # 1024 MiB + 488 MiB (512*10^6 bytes, rounded down) + 128; cpus ceil(0.5) + 1
    assert app_resources(p, {}, host_cpus=8) == Resources(cpus=2, memory_mib=1024 + 488 + 128)


def test_resources_floor_and_cpu_cap():
    p = pod([], [app("a", ("resource/memory", "64Mi"), ("resource/cpu", "16"))])
    assert app_resources(p, {}, host_cpus=4) == Resources(cpus=4, memory_mib=256)
    assert app_resources(pod([], [app("a")]), {}, host_cpus=3) == Resources(cpus=3, memory_mib=256)
    # above the floor: the limits and the system's 128 MiB
    p = pod([], [app("a", ("resource/memory", "200Mi"))])
    assert app_resources(p, {}, host_cpus=1) == Resources(cpus=1, memory_mib=328)


def test_bad_quantity_names_the_isolator():
    p = pod([], [app("a", ("resource/memory", "lots"))])
    with pytest.raises(InvalidInput) as error:
        app_resources(p, {}, host_cpus=1)
    assert error.value.problems[0].field == "apps[0].app.isolators[0].value.limit"


@pytest.mark.parametrize("text, value", [("1G", 10**9), ("1Gi", 2**30), ("500m", 0.5), ("2", 2), (3, 3)])
def test_quantities(text, value):
    assert float(parse_quantity(text)) == pytest.approx(value)
