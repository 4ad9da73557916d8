"""Whole hypervisor command lines for a pod, lkvm or QEMU, as rkt 1.30 built them for lkvm.

Data in, a list out: one option and its value per line, so the argv reads as the hypervisor sees it.
"""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ...guest.mount_units import ninep_mount_options
from ..net.nics import Network, kernel_ip_param, lkvm_network_args, qemu_network_args
from .pod_devices import lkvm_pod_args, pod_kernel_params, pod_share, qemu_pod_args, socket_chardev
from .resources import Resources
from .supervisor import supervisor_argv
from .virtiofs import VIRTIOFSD, MEMORY_BACKEND_ID, qemu_memory_args, qemu_virtiofs_args
from .volume_staging import needs_namespace, plan_exports
from .volumes import (DEFAULT_SECURITY_MODEL, ROOT_SECURITY_MODEL, SECURITY_MODELS,
                      lkvm_9p_args, qemu_9p_args, qemu_value, qemu_volume_args)
from ...pod.model import Pod
from ...pod.names import MAX_9P_TAG_BYTES
from ...pod.problems import InvalidInput, Problem
from ...pod.staging import StagedVolume

HYPERVISORS = ("lkvm", "qemu")
SHARES = ("9p", "virtiofs")
ACCELS = ("auto", "kvm", "tcg")
DEFAULT_ROOT_TAG = "rootfs"  # not "/dev/root": Debian's initramfs then waits for a block device
EXTRA_KERNEL_PARAMS_ENV = "KVMPOD_EXTRA_KERNEL_PARAMS"  # like rkt's RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS

# What reaches an x86 guest: kvmtool's x86 loader (x86/kvm.c, load_bzimage) copies at most the
# kernel header's cmdline_size (2,047 for Linux) minus its NUL, so 2,046 characters; the rest is cut
# silently (a systemd.unit= at the end was seen lost). QEMU's x86 loader refuses what does not fit
# in the same 2,048-byte COMMAND_LINE_SIZE instead, so one limit serves both.
MAX_KERNEL_CMDLINE_CHARS = 2046
# What lkvm writes before --params (kvmtool b48735e, builtin-run.c kvm_run_set_real_cmdline): x86's
# kvm__arch_set_cmdline (x86/kvm.c) without video, the console of `--console virtio`, then for
# `--disk DIR` (using_rootfs, not custom_rootfs: no init=, no ip=dhcp) its 9p root, then " " and
# --params. With --initrd and a `root=` in --params it adds nothing else. 132 and 201 bytes.
LKVM_X86_PARAMS = ("noapic noacpi pci=conf1 reboot=k panic=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1"
                   " earlyprintk=serial i8042.noaux=1")
LKVM_CONSOLE_PARAMS = " console=hvc0"
LKVM_DISK_ROOT_PARAMS = " rw rootflags=trans=virtio,version=9p2000.L,cache=loose rootfstype=9p"
LKVM_INITRD_PREFIX = LKVM_X86_PARAMS + LKVM_CONSOLE_PARAMS + " "
LKVM_DISK_PREFIX = LKVM_X86_PARAMS + LKVM_CONSOLE_PARAMS + LKVM_DISK_ROOT_PARAMS + " "
# lkvm keeps its control socket in $HOME/.lkvm (kvmtool kvm.c kvm__set_dir); a transient unit has no
# HOME, so kvmpod gives lkvm this one (shared by all pods: the socket is named after --name).
LKVM_HOME = "/run/kvmpod/lkvm"
UNSAFE_WRITES_OPTION = "--unsafe-volume-writes"

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
    console: str = "stdio"  # "stdio", "file:PATH" or "socket:PATH" (QEMU only; lkvm's console is its stdout)
    root_tag: str = DEFAULT_ROOT_TAG
    security_model: str | None = None  # None: not given (DEFAULT_SECURITY_MODEL for QEMU's 9p)
    share: str = "9p"  # host volumes over "9p" or "virtiofs" (QEMU only)
    unsafe_volume_writes: bool = False  # writable volumes over lkvm's 9p or virtio-fs (see check_settings)
    accel: str = "auto"
    extra_kernel_params: str = ""
    lkvm_binary: str = "lkvm"
    pod_dir: str | None = None  # kvmpod run's pod directory: its share, apps' output port, QMP (host.pods)
    prerendered_units: str | None = None  # "kvmpod.units=<sha256>": units the host rendered (host.prerendered_units)
    qemu_binary: str = "qemu-system-x86_64"
    virtiofsd_binary: str = VIRTIOFSD
    python: str = sys.executable  # runs kvmpod.host.hypervisor.supervisor when the volumes need it


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

# The root's 9p cache mode (issue 20): loose, where the volumes and the pod share keep mmap. loose
# caches pages, names and attributes in the guest and never asks the host again, which is right only
# when nothing but the guest changes the tree while it runs: true of a pod's root (kvmpod writes it
# before the boot, its lower layers are never written, and the host reads the pod's files only after
# the VM is gone), not of a host volume. It also writes back: a write into the root reaches the host
# at the guest's writeback or its shutdown's sync (seen in a booted pod: the file empty on the host
# while the app ran, whole after the pod's end), so a VM that is killed may lose its last writes into
# its own root (a --keep pod's files); never the volumes' nor the apps' records. Measured
# (bench_run.py --also, quiet machine, TCG, 2 runs): the first app line 30.6 s -> 22.5 s after
# `kvmpod run`; the floor's (one exec of busybox) 8.8 s -> 8.5 s.
ROOT_9P_CACHE = "cache=loose"


def root_params(settings: HostSettings) -> list[str]:
    """The 9p root. lkvm's own (`--disk DIR`, no initrd) gets only a later `rootflags=`, which the
    kernel prefers to lkvm's (whose cache=loose had no msize)."""
    flags = "rootflags=" + ninep_mount_options(ROOT_9P_CACHE, read_only=False)
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
    if settings.share == "virtiofs":
        params.append("kvmpod.share=virtiofs")  # the generator writes Type=virtiofs mount units
    if settings.pod_dir is not None:
        params += pod_kernel_params(settings.pod_dir)
    if settings.prerendered_units is not None:
        params.append(settings.prerendered_units)
    if settings.extra_kernel_params.strip():
        params.append(settings.extra_kernel_params.strip())
    return " ".join(params)


# ---------------------------------------------------------------- checks

def check_settings(settings: HostSettings, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...]) -> None:
    problems = []
    if settings.hypervisor not in HYPERVISORS:
        problems.append(Problem("--hypervisor", f"is {settings.hypervisor!r}; use lkvm or qemu"))
    problems += _transport_problems(settings, staged)
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
    if console != "stdio" and not any(console.startswith(kind) and len(console) > len(kind)
                                      for kind in ("file:", "socket:")):
        problems.append(Problem("--console", f"is {console!r}; use stdio, file:PATH or socket:PATH"))
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


def _transport_problems(settings: HostSettings, staged: tuple[StagedVolume, ...]) -> list[Problem]:
    """Issue 13: no transport may let the pod plant setuid files or device nodes on the host unless
    the user said so. QEMU's 9p maps owners and modes (mapped-xattr); lkvm's 9p and virtiofsd cannot,
    so writable host volumes over them need --unsafe-volume-writes."""
    problems = []
    model = settings.security_model
    if settings.share not in SHARES:
        problems.append(Problem("--share", f"is {settings.share!r}; use {', '.join(SHARES)}"))
    elif settings.share == "virtiofs" and settings.hypervisor == "lkvm":
        problems.append(Problem("--share", "lkvm has no virtio-fs device; use --share 9p or --hypervisor qemu"))
    if model is not None and model not in SECURITY_MODELS:
        problems.append(Problem("--security-model", f"is {model!r}; use {', '.join(SECURITY_MODELS)}"))
    elif model is not None and settings.hypervisor == "lkvm":
        problems.append(Problem("--security-model", "lkvm's 9p server has no security models: it applies the "
                                                    "guest's owners and modes to the host files (like passthrough) "
                                                    "and returns a failed chown to the guest; drop the option, "
                                                    f"and see {UNSAFE_WRITES_OPTION} for writable volumes"))
    elif model is not None and settings.share == "virtiofs":
        problems.append(Problem("--security-model", "is a 9p option; virtiofsd applies the guest's owners and "
                                                    f"modes to the host files: see {UNSAFE_WRITES_OPTION}"))
    unsafe_transport = settings.hypervisor == "lkvm" or settings.share == "virtiofs"
    if settings.unsafe_volume_writes and not unsafe_transport:
        problems.append(Problem(UNSAFE_WRITES_OPTION, "is for lkvm's 9p and virtio-fs; with QEMU's 9p say "
                                                      "--security-model none (or passthrough) instead"))
    if unsafe_transport and not settings.unsafe_volume_writes:
        transport = "lkvm's 9p server" if settings.hypervisor == "lkvm" else "virtiofsd"
        for s in staged:
            if s.volume.read_only is not True:
                problems.append(Problem(f"volumes({s.stage_name}).readOnly",
                                        f"host volume {s.stage_name!r} is writable and {transport} applies the "
                                        f"guest's owners and modes to the host files, so root in the pod could "
                                        f"leave setuid-root programs or device nodes there; make it readOnly, "
                                        f"use QEMU's 9p (--hypervisor qemu --share 9p), or accept that with "
                                        f"{UNSAFE_WRITES_OPTION}"))
    return problems


def volume_security_model(settings: HostSettings) -> str:
    return settings.security_model or DEFAULT_SECURITY_MODEL


def lkvm_cmdline_prefix(settings: HostSettings) -> str:
    """What lkvm writes before kvmpod's --params, byte for byte (see LKVM_X86_PARAMS)."""
    return LKVM_DISK_PREFIX if settings.initrd is None else LKVM_INITRD_PREFIX


def _check_cmdline(params: str, prefix: str, hypervisor: str) -> None:
    size = len((prefix + params).encode())
    if size > MAX_KERNEL_CMDLINE_CHARS:
        raise InvalidInput([Problem("kernel command line", f"{size} bytes with what {hypervisor} adds, over "
                                                           f"the {MAX_KERNEL_CMDLINE_CHARS} the x86 kernel gets; "
                                                           f"shorten {EXTRA_KERNEL_PARAMS_ENV} or use fewer networks")])


# ---------------------------------------------------------------- argv

def lkvm_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
              settings: HostSettings, resources: Resources) -> list[str]:
    check_settings(settings, staged, networks)
    params = kernel_params(settings, networks)
    _check_cmdline(params, lkvm_cmdline_prefix(settings), "lkvm")
    exports = plan_exports(staged)
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
        argv += ["--disk", rootfs]  # lkvm shares it as the 9p root (tag /dev/root); the kernel needs 9p built in
    else:
        # --initrd turns off lkvm's automatic 9p root: share the rootfs under our own tag instead.
        argv += ["--initrd", os.path.abspath(settings.initrd),
                 f"--9p={rootfs},{settings.root_tag}"]
    argv += ["--params", params]
    argv += lkvm_9p_args(pod, staged, exports)
    # Without --network lkvm adds a user-mode NIC with NAT and DHCP (kvmtool virtio/net.c);
    # mode=none adds none, as QEMU's -nodefaults does.
    argv += lkvm_network_args(networks, settings.pod_uuid) or ["--network", "mode=none"]
    if settings.pod_dir is not None:
        argv += lkvm_pod_args(settings.pod_dir)
    # Always supervised: lkvm needs a HOME for its control socket, and read-only or non-recursive
    # volumes need their staged binds (lkvm's 9p has no read-only option at all).
    return supervisor_argv(settings.python, exports, argv, home=LKVM_HOME, pod_share=pod_share(settings.pod_dir))


def qemu_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
              settings: HostSettings, resources: Resources,
              detect: Callable[[], str] = detect_accel) -> list[str]:
    check_settings(settings, staged, networks)
    params = kernel_params(settings, networks)
    _check_cmdline(params, "", "QEMU")
    exports = plan_exports(staged)
    virtiofs = settings.share == "virtiofs"
    accel = detect() if settings.accel == "auto" else settings.accel
    if settings.console == "stdio":
        chardev = "stdio,id=console"
    elif settings.console.startswith("socket:"):
        chardev = socket_chardev("console", os.path.abspath(settings.console[len("socket:"):]))
    else:
        chardev = f"file,id=console,path={qemu_value(os.path.abspath(settings.console[len('file:'):]))}"
    argv = [
        settings.qemu_binary,
        "-name", f"kvmpod-{settings.pod_uuid}",
        "-machine", f"q35,memory-backend={MEMORY_BACKEND_ID}" if virtiofs else "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(resources.cpus),
        "-m", str(resources.memory_mib),
    ]
    if virtiofs:
        argv += qemu_memory_args(resources.memory_mib)
    argv += [
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
    # multidevs=remap: the root spans filesystems (an app's rootfs is an overlay of its stored image
    # mounted inside the stage1's, host.pods.app_root); QEMU keeps their inode numbers apart.
    argv += qemu_9p_args("root", os.path.abspath(settings.rootfs), settings.root_tag, ROOT_SECURITY_MODEL,
                         read_only=False, remap_devices=True)
    if virtiofs:
        argv += qemu_virtiofs_args(exports)
    else:
        argv += qemu_volume_args(staged, volume_security_model(settings), exports)
    argv += qemu_network_args(networks, settings.pod_uuid)
    if settings.pod_dir is not None:
        # The pod share is kvmpod's own directory inside the 0700 pod directory, like the root share.
        argv += qemu_pod_args(settings.pod_dir, ROOT_SECURITY_MODEL)
    share = pod_share(settings.pod_dir)  # kvmpod run's pods: the share is a capped tmpfs (supervised)
    if virtiofs:
        return supervisor_argv(settings.python, exports, argv, virtiofsd=settings.virtiofsd_binary, pod_share=share)
    if needs_namespace(exports) or share is not None:
        return supervisor_argv(settings.python, exports, argv, pod_share=share)
    return argv


def build_argv(pod: Pod, staged: tuple[StagedVolume, ...], networks: tuple[Network, ...],
               settings: HostSettings, resources: Resources,
               detect: Callable[[], str] = detect_accel) -> list[str]:
    """The pod's whole launched command: the hypervisor's argv, behind kvmpod.host.hypervisor.supervisor when
    the volumes need host-side staging or virtiofsd (and always for lkvm, which needs a HOME)."""
    if settings.hypervisor == "lkvm":
        return lkvm_argv(pod, staged, networks, settings, resources)
    return qemu_argv(pod, staged, networks, settings, resources, detect)


def hypervisor_part(argv: list[str]) -> list[str]:
    """The hypervisor's own argv inside a launched command (itself when not supervised)."""
    if len(argv) > 2 and argv[1:3] == ["-m", "kvmpod.host.hypervisor.supervisor"]:
        return argv[argv.index("--") + 1:]
    return argv
