"""Host-side volume staging (rkt's stage1 did it on the host too): what each host volume's
hypervisor export really is.

A read-only volume is exported through a read-only bind mount of its source, and a volume with
`recursive: false` through a non-recursive bind (submounts under the source stay hidden); the other
volumes are exported as they are. The binds are made by `kvmpod.host.hypervisor.supervisor` in a mount
namespace private to the pod's hypervisor, on a tmpfs it mounts over STAGING_DIR there: nothing
reaches the host's mount table and everything goes when the hypervisor's last process dies.
Pure: this module only plans; the supervisor mounts.
"""

from dataclasses import dataclass

from ...pod.staging import StagedVolume

# An empty directory on the host (created once, left empty); in the pod's private mount namespace a
# tmpfs is mounted on it, holding the staged binds and the virtiofsd sockets.
STAGING_DIR = "/run/kvmpod/staging"


@dataclass(frozen=True)
class Export:
    staged: StagedVolume
    index: int  # position among the pod's host volumes: device ids (vol<i>) and socket names
    source: str  # the host directory (absolute)
    read_only: bool  # the volume says readOnly: true (a mount point's readOnly is the guest's business)
    recursive: bool  # False only for `recursive: false`
    path: str  # what the hypervisor (or virtiofsd) exports: source itself, or the staged bind

    @property
    def bind_options(self) -> str | None:
        """How the supervisor binds source to path (mount(8)-style), or None when it need not."""
        if self.path == self.source:
            return None
        return ("rbind" if self.recursive else "bind") + (",ro" if self.read_only else "")

    @property
    def socket(self) -> str:
        """virtiofsd's vhost-user socket for this volume (short: sun_path holds 108 bytes)."""
        return f"{STAGING_DIR}/vfs{self.index}.sock"


def plan_exports(staged: tuple[StagedVolume, ...], source_of=None) -> tuple[Export, ...]:
    """One Export per staged host volume, in manifest order."""
    import os

    source_of = source_of or (lambda s: os.path.abspath(s.volume.source or ""))
    exports = []
    for i, s in enumerate(staged):
        source = source_of(s)
        read_only = s.volume.read_only is True
        recursive = s.volume.recursive is not False
        needs_bind = read_only or not recursive
        path = f"{STAGING_DIR}/vol{i}" if needs_bind else source
        exports.append(Export(s, i, source, read_only, recursive, path))
    return tuple(exports)


def needs_namespace(exports: tuple[Export, ...]) -> bool:
    return any(e.bind_options is not None for e in exports)
