"""What each transport does and does not enforce, in sentences for `kvmpod explain` (pure)."""

from ...pod.staging import StagedVolume
from .argv import LKVM_HOME, HostSettings, lkvm_cmdline_prefix, volume_security_model
from .volume_staging import plan_exports

UNSAFE_WRITES_HELP = ("UNSAFE: export writable host volumes over lkvm's 9p or virtio-fs, which apply the guest's "
                      "owners and modes to the host files: root in the pod can then leave setuid-root programs, "
                      "device nodes and FIFOs in the volumes (QEMU's 9p maps them away instead; see "
                      "--security-model)")


def transport_notes(settings: HostSettings, staged: tuple[StagedVolume, ...]) -> list[str]:
    notes = []
    exports = plan_exports(staged)
    staged_binds = [e for e in exports if e.bind_options is not None]
    if settings.hypervisor == "lkvm":
        prefix = lkvm_cmdline_prefix(settings)
        notes.append(f"lkvm writes {len(prefix.encode())} bytes of its own before --params "
                     f"({prefix.strip()!r}); the x86 kernel gets at most 2046 in all")
        if settings.initrd is None:
            notes.append("no initrd: lkvm shares --rootfs as its 9p root itself (cache=loose, overridden by "
                         "kvmpod's later rootflags=); the guest kernel must have virtio-pci, 9p and 9pnet_virtio "
                         "built in (Debian's has them as modules: give --initrd or put initrd.img in the rootfs)")
        notes.append("lkvm's 9p server has no read-only option and no security model: read-only volumes are "
                     "protected only by kvmpod's read-only staged bind on the host (and the guest's ro mount); "
                     "writes apply the guest's owners and modes to host files"
                     + (" (allowed by --unsafe-volume-writes)" if settings.unsafe_volume_writes else
                        ", so writable volumes are refused without --unsafe-volume-writes"))
        notes.append(f"lkvm runs with HOME={LKVM_HOME} (its control socket goes to $HOME/.lkvm) and "
                     "--network mode=none when the pod has no networks")
    elif settings.share == "virtiofs":
        notes.append("virtio-fs: one virtiofsd per host volume, started before QEMU and stopped with it by "
                     "kvmpod.host.hypervisor.supervisor; read-only volumes are served from a read-only staged bind; "
                     "virtiofsd applies the guest's owners and modes to host files"
                     + (" (allowed by --unsafe-volume-writes)" if settings.unsafe_volume_writes else ""))
    else:
        model = volume_security_model(settings)
        if model in ("mapped-xattr", "mapped-file"):
            notes.append(f"9p security model {model}: files the pod writes are owned on the host by QEMU's user "
                         "(root), mode 0600 (directories 0700), never setuid, setgid or a device; the guest's "
                         "owners and modes live in "
                         + ("user.virtfs.* xattrs" if model == "mapped-xattr" else ".virtfs_metadata files"))
        else:
            notes.append(f"9p security model {model} (UNSAFE): the guest's owners and modes, setuid and setgid "
                         "included, are applied to the host files"
                         + (", and device nodes are created as such" if model == "passthrough" else ""))
    for e in staged_binds:
        notes.append(f"volume {e.staged.stage_name}: staged on the host as a {e.bind_options} bind of "
                     f"{e.source} at {e.path}, in a mount namespace private to the hypervisor")
    return notes
