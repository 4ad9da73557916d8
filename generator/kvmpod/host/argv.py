"""Whole hypervisor command lines for a pod, lkvm or QEMU, as rkt 1.30 built them for lkvm.

Data in, a list out: one option and its value per line, so the argv reads as the hypervisor sees it.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..guest.mount_units import ninep_mount_options
from .network import Network, kernel_ip_param, lkvm_network_args, qemu_network_args
from .pods import lkvm_pod_args, pod_kernel_params, qemu_pod_args
from .resources import Resources
from .volumes import (DEFAULT_SECURITY_MODEL, SECURITY_MODELS, lkvm_9p_args, qemu_9p_args, qemu_value,
                           qemu_volume_args)
from ..pod.model import Pod
from ..pod.names import MAX_9P_TAG_BYTES
from ..pod.problems import InvalidInput, Problem
from ..pod.staging import StagedVolume

HYPERVISORS = ("lkvm", "qemu")
ACCELS = ("auto", "kvm", "tcg")
DEFAULT_ROOT_TAG = "rootfs"  # not "/dev/root": Debian's initramfs then waits for a block device
EXTRA_KERNEL_PARAMS_ENV = "KVMPOD_EXTRA_KERNEL_PARAMS"  # like rkt's RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS

# x86's COMMAND_LINE_SIZE, NUL included; lkvm's own buffer is the same 2,048 bytes.
MAX_KERNEL_CMDLINE_BYTES = 2048
# What lkvm writes before --params (kvmtool builtin-run.c: its x86 defaults, then for --disk DIR the
# 9p root). The first part is an estimate with room to spare; the second is what it appends.
LKVM_OWN_PARAMS = ("noapic noacpi pci=conf1 reboot=k panic=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 "
                   "earlyprintk=serial i8042.noaux=1 console=ttyS0 init=/virt/init ip=dhcp "
                   "rw rootflags=trans=virtio,version=9p2000.L,cache=loose rootfstype=9p ")
# Every volume and NIC is a PCI device. QEMU's q35 root bus has 30 free slots and lkvm's bus 32
# device numbers; the root share and the console take some. More would fail at start: refuse here.
MAX_PCI_DEVICES = 28


@dataclass(frozen=True)
class HostSettings:
    hypervisor: str  # "lkvm" or "qemu"
    pod_uuid: str  # canonical (network.parse_uuid)
    rootfs: str  # the stage1 rootfs directory: the guest's root
    kernel: str
    initrd: str | None = None
    console: str = "stdio"  # "stdio" or "file:PATH" (QEMU only; lkvm's console is its stdout)
    root_tag: str = DEFAULT_ROOT_TAG
    security_model: str = DEFAULT_SECURITY_MODEL
    accel: str = "auto"
    extra_kernel_params: str = ""
    lkvm_binary: str = "lkvm"
    pod_dir: str | None = None  # kvmpod run's pod directory: its share, apps' output port, QMP (host.pods)
    qemu_binary: str = "qemu-system-x86_64"


# ---------------------------------------------------------------- acceleration

def detect_accel(sys_module: str = "/sys/module", exists: Callable[[str], bool] | None = None) -> str:
    """"kvm" only for hardware KVM (kvm_intel or kvm_amd loaded, no kvm_pvm); else "tcg".

    The /dev/kvm of kvm_pvm (a software nested KVM) cannot boot a stock kernel
    (guest-boot-notes.md), so it counts as no KVM.
    """
    exists = exists or os.path.exists
    if exists(f"{sys_module}/kvm_pvm"):
        return "tcg"
    if exists(f"{sys_module}/kvm_intel") or exists(f"{sys_module}/kvm_amd"):
        return "kvm"
    return "tcg"


# ---------------------------------------------------------------- kernel command line

def root_params(settings: HostSettings) -> list[str]:
    """The 9p root. lkvm's own (`--disk DIR`, no initrd) gets only a later `rootflags=`, which the
    kernel prefers to lkvm's `cache=loose` (which lost rkt's writes at shutdown)."""
    flags = "rootflags=" + ninep_mount_options(None, read_only=False)  # the 9p options the volumes use
    if settings.hypervisor == "lkvm" and settings.initrd is None:
        return [flags]
    return [f"root={settings.root_tag}", "rootfstype=9p", flags, "rw"]


def kernel_params(settings: HostSettings, networks: tuple[Network, ...]) -> str:
    console = "hvc0" if settings.hypervisor == "lkvm" else "ttyS0"
    params = [f"console={console}", "panic=1"] + root_params(settings)
    if networks:
        # Keep eth<i> names: the guest's network units and the kernel's ip= address NICs by them.
        params.append("net.ifnames=0")
        params.append(kernel_ip_param(networks[0], 0))  # the kernel honours one ip=; units do the rest
    if settings.pod_dir is not None:
        params += pod_kernel_params(settings.pod_dir)
    if settings.extra_kernel_params.strip():
        params.append(settings.extra_kernel_params.strip())
    return " ".join(params)


# ---------------------------------------------------------------- checks

def check_settings(settings: HostSettings, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...]) -> None:
    problems = []
    if settings.hypervisor not in HYPERVISORS:
        problems.append(Problem("--hypervisor", f"is {settings.hypervisor!r}; use lkvm or qemu"))
    if settings.security_model not in SECURITY_MODELS:
        problems.append(Problem("--security-model", f"is {settings.security_model!r}; use "
                                                    f"{', '.join(SECURITY_MODELS)}"))
    if settings.accel not in ACCELS:
        problems.append(Problem("--accel", f"is {settings.accel!r}; use {', '.join(ACCELS)}"))
    elif settings.hypervisor == "lkvm" and settings.accel == "tcg":
        problems.append(Problem("--accel", "lkvm runs only on KVM; use --hypervisor qemu for TCG"))
    tag = settings.root_tag
    if not tag or len(tag.encode()) > MAX_9P_TAG_BYTES or tag.startswith("/dev/") \
            or any(c.isspace() or c in "\",=" for c in tag):
        problems.append(Problem("--root-tag", f"{tag!r} cannot be the root's 9p tag: give 1-{MAX_9P_TAG_BYTES} "
                                              f"bytes without spaces, quotes, \",\" or \"=\", not starting "
                                              f"with /dev/ (Debian's initramfs would wait for a block device)"))
    elif tag in {s.tag for s in staged}:
        problems.append(Problem("--root-tag", f"{tag!r} is also the 9p tag of volume {tag!r}; choose another "
                                              f"root tag, e.g. --root-tag kvmpod_root"))
    console = settings.console
    if console != "stdio" and not (console.startswith("file:") and len(console) > len("file:")):
        problems.append(Problem("--console", f"is {console!r}; use stdio or file:PATH"))
    elif console != "stdio" and settings.hypervisor == "lkvm":
        problems.append(Problem("--console", "lkvm writes the guest console to its standard output; "
                                             "redirect that instead of file:PATH"))
    if any(c in settings.extra_kernel_params for c in "\n\r\0"):
        problems.append(Problem(EXTRA_KERNEL_PARAMS_ENV, "contains a line break or NUL; give one line"))
    for option, path in (("--rootfs", settings.rootfs), ("--kernel", settings.kernel), ("--initrd", settings.initrd)):
        if path is not None and settings.hypervisor == "lkvm" and option == "--rootfs" and "," in path:
            problems.append(Problem(option, f"{path!r} contains a comma, which lkvm's --disk/--9p cannot "
                                            f"carry; rename it or use QEMU"))
        if path is not None and any(c in path for c in "\n\r\0"):
            problems.append(Problem(option, f"{path!r} contains a line break or NUL; rename it"))
    devices = len(staged) + len(networks)
    if devices > MAX_PCI_DEVICES:
        problems.append(Problem("volumes", f"{len(staged)} host volumes and {len(networks)} networks need "
                                           f"{devices} PCI devices; kvmpod supports at most {MAX_PCI_DEVICES} "
                                           f"together (the VM's PCI bus is full beyond that)"))
    if problems:
        raise InvalidInput(problems)


def _check_cmdline(params: str, reserved: str, hypervisor: str) -> None:
    size = len((reserved + params).encode()) + 1
    if size > MAX_KERNEL_CMDLINE_BYTES:
        raise InvalidInput([Problem("kernel command line", f"{size} bytes with what {hypervisor} adds, over the "
                                                           f"{MAX_KERNEL_CMDLINE_BYTES}-byte limit; shorten "
                                                           f"{EXTRA_KERNEL_PARAMS_ENV} or use fewer networks")])


# ---------------------------------------------------------------- argv

def lkvm_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
              settings: HostSettings, resources: Resources) -> list[str]:
    check_settings(settings, staged, networks)
    params = kernel_params(settings, networks)
    _check_cmdline(params, LKVM_OWN_PARAMS if settings.initrd is None else "", "lkvm")
    rootfs = os.path.abspath(settings.rootfs)
    argv = [
        settings.lkvm_binary, "run",
        "--name", f"kvmpod-{settings.pod_uuid}",
        "--cpus", str(resources.cpus),
        "--mem", str(resources.memory_mib),
        "--console", "virtio",
        "--kernel", os.path.abspath(settings.kernel),
    ]
    if settings.initrd is None:
        argv += ["--disk", rootfs]  # lkvm shares it as the 9p root (tag /dev/root)
    else:
        # --initrd turns off lkvm's automatic 9p root: share the rootfs under our own tag instead.
        argv += ["--initrd", os.path.abspath(settings.initrd),
                 f"--9p={rootfs},{settings.root_tag}"]
    argv += ["--params", params]
    argv += lkvm_9p_args(pod, staged)
    argv += lkvm_network_args(networks, settings.pod_uuid)
    if settings.pod_dir is not None:
        argv += lkvm_pod_args(settings.pod_dir)
    return argv


def qemu_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
              settings: HostSettings, resources: Resources,
              detect: Callable[[], str] = detect_accel) -> list[str]:
    check_settings(settings, staged, networks)
    params = kernel_params(settings, networks)
    _check_cmdline(params, "", "QEMU")
    accel = detect() if settings.accel == "auto" else settings.accel
    if settings.console == "stdio":
        chardev = "stdio,id=console"
    else:
        chardev = f"file,id=console,path={qemu_value(os.path.abspath(settings.console[len('file:'):]))}"
    argv = [
        settings.qemu_binary,
        "-name", f"kvmpod-{settings.pod_uuid}",
        "-machine", "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(resources.cpus),
        "-m", str(resources.memory_mib),
        "-nodefaults",
        "-no-reboot",
        "-display", "none",
        "-chardev", chardev,
        "-serial", "chardev:console",
        "-kernel", os.path.abspath(settings.kernel),
    ]
    if settings.initrd is not None:
        argv += ["-initrd", os.path.abspath(settings.initrd)]
    argv += ["-append", params]
    argv += qemu_9p_args("root", os.path.abspath(settings.rootfs), settings.root_tag, settings.security_model,
                         read_only=False)
    argv += qemu_volume_args(staged, settings.security_model)
    argv += qemu_network_args(networks, settings.pod_uuid)
    if settings.pod_dir is not None:
        argv += qemu_pod_args(settings.pod_dir, settings.security_model)
    return argv


def build_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
               settings: HostSettings, resources: Resources,
               detect: Callable[[], str] = detect_accel) -> list[str]:
    if settings.hypervisor == "lkvm":
        return lkvm_argv(pod, staged, networks, settings, resources)
    return qemu_argv(pod, staged, networks, settings, resources, detect)
