"""virtio-fs beside 9p (`--share virtiofs`, QEMU only): one virtiofsd per host volume, QEMU's
shared memory and a vhost-user-fs-pci device per volume, with the same tag the guest mounts.

Why these choices:
- virtiofsd is Debian 12's `/usr/lib/qemu/virtiofsd` (QEMU 7.2's C daemon), one per volume, as mkosi
  and systemd-vmspawn do: a volume's daemon sees only that volume. `kvmpod.host.hypervisor.supervisor` starts
  them before QEMU, in the pod's private mount namespace, and stops them with it.
- That virtiofsd has no read-only option: a read-only volume is exported from its read-only staged
  bind (volume_staging), which virtiofsd's own sandbox (a mount namespace pivoted into the source)
  inherits read-only, and the guest mounts it `ro` as well.
- It has no uid mapping either: it applies the guest's owners and modes, setuid and device nodes
  included, to the host files (like 9p's "passthrough"). So writable host volumes over virtio-fs
  need `--unsafe-volume-writes` (issue 13); read-only ones do not.
- vhost-user needs the guest's RAM shared with virtiofsd: a memfd memory backend of the VM's size.
"""

from .volume_staging import Export
from .volumes import qemu_value

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
# virtio-fs tags may be 36 bytes (virtio_fs.h); names.ninep_tag keeps to 9p's 31, which fits both.
MAX_VIRTIOFS_TAG_BYTES = 36
MEMORY_BACKEND_ID = "kvmpod-mem"


def qemu_memory_args(memory_mib: int) -> list[str]:
    """The shared RAM vhost-user needs; given to -machine as memory-backend= (see qemu_argv)."""
    return ["-object", f"memory-backend-memfd,id={MEMORY_BACKEND_ID},size={memory_mib}M,share=on"]


def qemu_virtiofs_args(exports: tuple[Export, ...]) -> list[str]:
    """A vhost-user chardev and a vhost-user-fs-pci device per host volume, in manifest order."""
    args = []
    for e in exports:
        tag = e.staged.tag
        if len(tag.encode()) > MAX_VIRTIOFS_TAG_BYTES:  # cannot happen with names.ninep_tag
            raise ValueError(f"virtio-fs tag {tag!r} is over {MAX_VIRTIOFS_TAG_BYTES} bytes")
        args += [
            "-chardev", f"socket,id=vfs{e.index},path={qemu_value(e.socket)}",
            "-device", f"vhost-user-fs-pci,chardev=vfs{e.index},tag={qemu_value(tag)}",
        ]
    return args


def virtiofsd_argv(binary: str, socket: str, source: str) -> list[str]:
    """One virtiofsd serving `source` on `socket` until QEMU disconnects (then it exits)."""
    # cache=auto is virtiofsd's default and keeps host-side changes visible after a timeout; the
    # namespace sandbox (default) pivots into the source, so the daemon sees nothing else.
    # log_level=warn: at info it logs every queue start, which would drown the pod's own output.
    return [binary, f"--socket-path={socket}", "-o", f"source={source}", "-o", "cache=auto",
            "-o", "sandbox=namespace", "-o", "log_level=warn"]
