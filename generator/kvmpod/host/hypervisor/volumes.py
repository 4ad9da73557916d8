"""The host half of volumes: export each staged host volume over 9p, for lkvm or QEMU.

One model, two renderings: the host exports exactly `staged_host_volumes(pod)`, each under
exactly `StagedVolume.tag`, the tag the guest generator mounts.
"""

import os
from collections.abc import Callable

from ...pod.model import Pod
from ...pod.names import MAX_9P_TAG_BYTES
from ...pod.problems import InvalidInput, Problem
from ...pod.staging import StagedVolume, app_volume_stage_name, staged_host_volumes
from .volume_staging import Export, plan_exports

# kvmtool rejects 9p tags over 32 bytes, QEMU over 31; names.ninep_tag keeps to the smaller.
LKVM_MAX_9P_TAG_BYTES = 32

SECURITY_MODELS = ("mapped-xattr", "mapped-file", "passthrough", "none")
# Default "mapped-xattr" (issue 13): QEMU then creates every file and directory the guest makes as
# its own user (root) with mode 0600 (directories 0700) and keeps the guest's owner, mode and device
# number in the `user.virtfs.*` extended attributes. So a setuid-root shell, a setgid file, a device
# node, a FIFO or a socket made by root in the pod is, on the host, a plain root-only file: nothing
# a host user can run, open as a device or use to reach root. The guest still sees its own owners
# and modes. "none" and "passthrough" (kvmpod's old default was "none") apply the guest's chown and
# mode bits, setuid included, to the host file: only by explicit choice. The root share (kvmpod's
# own copy of the stage1 tree, not a host volume) keeps "none": its files must keep their owners.
DEFAULT_SECURITY_MODEL = "mapped-xattr"
ROOT_SECURITY_MODEL = "none"
# What each model allows, for --help and errors.
SECURITY_MODEL_HELP = (
    "9p security model of the host volumes (QEMU): mapped-xattr (default) keeps the guest's owners and "
    "modes in user.virtfs.* xattrs, host files are QEMU's (root), mode 0600/0700, never setuid, setgid "
    "or a device; mapped-file does the same in .virtfs_metadata files (for filesystems without user "
    "xattrs); none and passthrough UNSAFE: apply the guest's owners and modes to the host files, so root "
    "in the pod can leave setuid-root programs (and with passthrough device nodes) in the volumes")
SAFE_SECURITY_MODELS = ("mapped-xattr", "mapped-file")

IsDir = Callable[[str], bool]


def volume_field(pod: Pod, staged: StagedVolume) -> str:
    """The manifest field a staged volume came from: `volumes[i]`, or an app's appVolume."""
    for i, volume in enumerate(pod.volumes):
        if volume.name == staged.stage_name:
            return f"volumes[{i}]"
    for i, app in enumerate(pod.apps):
        for j, mount in enumerate(app.mounts):
            if app_volume_stage_name(app.name, mount.volume) == staged.stage_name:
                return f"apps[{i}].mounts[{j}].appVolume"
    return f"volumes({staged.stage_name})"


def checked_host_volumes(pod: Pod, is_dir: IsDir | None = None) -> tuple[StagedVolume, ...]:
    """staged_host_volumes(pod), each source checked to exist on this host; else InvalidInput."""
    is_dir = is_dir or os.path.isdir
    staged = staged_host_volumes(pod)
    problems = []
    for s in staged:
        source = s.volume.source or ""
        if not is_dir(source):
            problems.append(Problem(f"{volume_field(pod, s)}.source",
                                    f"host volume {s.volume.name!r}: {source!r} does not exist or is not a "
                                    f"directory on this host; create it or fix the path"))
    if problems:
        raise InvalidInput(problems)
    return staged


def lkvm_9p_args(pod: Pod, staged: tuple[StagedVolume, ...], exports: tuple[Export, ...] | None = None) -> list[str]:
    """`--9p=<path>,<tag>` per host volume, in manifest order (rkt's VolumesToKvmDiskArgs); the path
    is the staged bind for read-only and non-recursive volumes (volume_staging)."""
    problems = []
    args = []
    for s, e in zip(staged, exports or plan_exports(staged)):
        source = e.path  # absolute: lkvm resolves relative paths against its cwd
        field = f"{volume_field(pod, s)}.source"
        if "," in source:
            # virtio/9p.c splits at the first comma: the rest would become the tag, silently.
            problems.append(Problem(field, f"{source!r} contains a comma, which lkvm's --9p cannot carry "
                                           f"(it splits the path there); rename the directory or use QEMU"))
            continue
        if len(s.tag.encode()) > LKVM_MAX_9P_TAG_BYTES:  # cannot happen with names.ninep_tag; checked anyway
            problems.append(Problem(f"{volume_field(pod, s)}.name", f"9p tag {s.tag!r} is over "
                                                                   f"{LKVM_MAX_9P_TAG_BYTES} bytes"))
            continue
        args.append(f"--9p={source},{s.tag}")
    if problems:
        raise InvalidInput(problems)
    return args


def qemu_value(value: str) -> str:
    """A value inside a QEMU `key=value,…` option: QEMU reads a doubled comma as one comma."""
    return value.replace(",", ",,")


def qemu_9p_args(fsdev_id: str, path: str, tag: str, security_model: str, read_only: bool,
                 remap_devices: bool = False) -> list[str]:
    """One 9p export: an -fsdev and the virtio-9p-pci device that shows it to the guest as `tag`.
    remap_devices: multidevs=remap, for an export that may span filesystems (a volume's submounts):
    QEMU then keeps inode numbers from colliding instead of warning that the guest may misbehave."""
    if security_model not in SECURITY_MODELS:
        raise ValueError(f"unknown 9p security model {security_model!r}")
    if len(tag.encode()) > MAX_9P_TAG_BYTES:
        raise ValueError(f"9p tag {tag!r} is over {MAX_9P_TAG_BYTES} bytes, which QEMU rejects")
    fsdev = f"local,id={fsdev_id},path={qemu_value(path)},security_model={security_model}"
    if remap_devices:
        fsdev += ",multidevs=remap"
    if read_only:
        fsdev += ",readonly=on"
    return [
        "-fsdev", fsdev,
        "-device", f"virtio-9p-pci,fsdev={fsdev_id},mount_tag={qemu_value(tag)}",
    ]


def qemu_volume_args(staged: tuple[StagedVolume, ...], security_model: str = DEFAULT_SECURITY_MODEL,
                     exports: tuple[Export, ...] | None = None) -> list[str]:
    """-fsdev/-device pairs per host volume, in manifest order; read-only volumes get readonly=on,
    so the guest cannot remount them writable (a second wall behind the staged read-only bind)."""
    args = []
    for i, (s, e) in enumerate(zip(staged, exports or plan_exports(staged))):
        # rbind (the default) exports the source's submounts too: remap their inode numbers.
        args += qemu_9p_args(f"vol{i}", e.path, s.tag, security_model, s.volume.read_only is True,
                             remap_devices=e.recursive)
    return args


XATTR_PROBE = "user.kvmpod.probe"


def _has_user_xattrs(path: str) -> bool:
    """Whether the filesystem holding the directory `path` stores user.* extended attributes."""
    import errno

    try:
        os.setxattr(path, XATTR_PROBE, b"1")
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    try:
        os.removexattr(path, XATTR_PROBE)
    except OSError:
        pass
    return True


def check_xattr_support(pod: Pod, staged: tuple[StagedVolume, ...], security_model: str,
                        has_user_xattrs: Callable[[str], bool] | None = None) -> None:
    """mapped-xattr keeps the guest's owners and modes in user.* xattrs: on a filesystem without them
    (tmpfs before Linux 6.6, some FUSE and network filesystems) every file the guest creates fails.
    Refuse up front, naming the volume and the way out. Read-only volumes are never written."""
    if security_model != "mapped-xattr":
        return
    has_user_xattrs = has_user_xattrs or _has_user_xattrs
    problems = []
    for s in staged:
        if s.volume.read_only is True:
            continue
        source = os.path.abspath(s.volume.source or "")
        try:
            ok = has_user_xattrs(source)
        except OSError as error:
            problems.append(Problem(f"{volume_field(pod, s)}.source", f"cannot probe {source!r} for user "
                                                                     f"extended attributes: {error.strerror}"))
            continue
        if not ok:
            problems.append(Problem(f"{volume_field(pod, s)}.source",
                                    f"the filesystem of {source!r} has no user extended attributes, where the "
                                    f"default --security-model mapped-xattr keeps the guest's owners and modes; "
                                    f"use --security-model mapped-file (keeps them in .virtfs_metadata files "
                                    f"there), or move the volume to ext4, xfs or btrfs"))
    if problems:
        raise InvalidInput(problems)
