"""The host half of volumes: export each staged host volume over 9p, for lkvm or QEMU.

One model, two renderings: the host exports exactly `staged_host_volumes(pod)`, each under
exactly `StagedVolume.tag`, the tag the guest generator mounts.
"""

import os
from collections.abc import Callable

from ..pod.model import Pod
from ..pod.names import MAX_9P_TAG_BYTES
from ..pod.problems import InvalidInput, Problem
from ..pod.staging import StagedVolume, app_volume_stage_name, staged_host_volumes

# kvmtool rejects 9p tags over 32 bytes, QEMU over 31; names.ninep_tag keeps to the smaller.
LKVM_MAX_9P_TAG_BYTES = 32

SECURITY_MODELS = ("mapped-xattr", "passthrough", "none")
# Default "none": kvmpod's QEMU runs as root (it needs the tap devices), and "none" then maps guest
# uids 1:1 onto host files as "passthrough" does (guest-boot-notes.md), but a failing chown/chmod
# in the guest is not an error: an app that chowns files on a share it does not own keeps working.
# "passthrough" makes those errors visible; "mapped-xattr" stores guest owners in xattrs instead, so
# host files keep QEMU's owner and the host sees different owners than the guest - wrong for data
# that host processes share with the pod.
DEFAULT_SECURITY_MODEL = "none"

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


def lkvm_9p_args(pod: Pod, staged: tuple[StagedVolume, ...]) -> list[str]:
    """`--9p=<source>,<tag>` per host volume, in manifest order (rkt's VolumesToKvmDiskArgs)."""
    problems = []
    args = []
    for s in staged:
        source = os.path.abspath(s.volume.source or "")  # lkvm resolves relative paths against its cwd
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


def qemu_9p_args(fsdev_id: str, path: str, tag: str, security_model: str, read_only: bool) -> list[str]:
    """One 9p export: an -fsdev and the virtio-9p-pci device that shows it to the guest as `tag`."""
    if security_model not in SECURITY_MODELS:
        raise ValueError(f"unknown 9p security model {security_model!r}")
    if len(tag.encode()) > MAX_9P_TAG_BYTES:
        raise ValueError(f"9p tag {tag!r} is over {MAX_9P_TAG_BYTES} bytes, which QEMU rejects")
    fsdev = f"local,id={fsdev_id},path={qemu_value(path)},security_model={security_model}"
    if read_only:
        fsdev += ",readonly=on"
    return [
        "-fsdev", fsdev,
        "-device", f"virtio-9p-pci,fsdev={fsdev_id},mount_tag={qemu_value(tag)}",
    ]


def qemu_volume_args(staged: tuple[StagedVolume, ...], security_model: str = DEFAULT_SECURITY_MODEL) -> list[str]:
    """-fsdev/-device pairs per host volume, in manifest order; read-only volumes get readonly=on,
    so the guest cannot remount them writable."""
    args = []
    for i, s in enumerate(staged):
        args += qemu_9p_args(f"vol{i}", os.path.abspath(s.volume.source or ""), s.tag, security_model,
                             s.volume.read_only is True)
    return args
