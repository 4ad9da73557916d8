"""The pod's root (the guest's 9p root): an overlay of the cached stage1 root, not a copy (issue 20).

    <pod>/stage1/upper/    the pod's own files: everything kvmpod and the guest write (the apps'
                           rootfs, the staged manifest, the rendered units, the journal); kept with --keep
    <pod>/stage1/work/     overlayfs's work directory
    <pod>/stage1/rootfs/   the overlay's mount point: lower = the cached stage1 root (read-only, shared
                           by every pod), upper = the pod's own directory above

The overlay is mounted in a mount namespace of `kvmpod run`'s own (unshare(CLONE_NEWNS), every mount
marked slave: the host's mounts still show inside, nothing made inside shows outside), which QEMU and
the volume supervisor inherit. The namespace lives exactly as long as kvmpod run and the processes it
started, which die with it (PR_SET_PDEATHSIG), so a killed pod leaves no mount anywhere; a pod that
ends detaches it before kvmpod run returns (`detach`: a background `umount --lazy` does the kernel's
cleanup of it after that). Preparing a pod costs a mount instead of a copy of the ~750 MB stage1 root,
whatever its size; the cached stage1 is never written (overlayfs writes only into the upper dir).

QEMU's 9p `local` export of an overlayfs with the root share's security model `none`: files keep
their owners and modes, the guest's xattrs land on the upper files (user.*; overlayfs keeps its own
trusted.overlay.* from the guest), a directory the guest renames from the lower layer gets EXDEV,
which mv and the like handle by copying.

When overlayfs cannot be used (not root, no overlay support, a path overlayfs's options cannot carry),
the pod gets a copy as before (`cp -a --reflink=auto`), and run says so.
"""

import ctypes
import os
import subprocess
import time

from ..linux.libc import check as _check, libc as _libc
from ..linux.parent_death import die_with_parent
from .pod_dirs import PodDir

CLONE_NEWNS = 0x00020000
MS_REC, MS_SLAVE = 16384, 1 << 19
MNT_DETACH = 2
# Characters overlayfs's mount options cannot carry in a directory's path (option and layer separators).
_OPTION_CHARS = frozenset(",:\\\n")


def upper_dir(pod: PodDir) -> str:
    return os.path.join(pod.stage1, "upper")


def work_dir(pod: PodDir) -> str:
    return os.path.join(pod.stage1, "work")


def pod_files(pod: PodDir) -> str:
    """Where the pod's own files are after it ended: the upper dir, or the copy when it had one."""
    upper = upper_dir(pod)
    return upper if os.path.isdir(upper) else pod.rootfs


def overlay_options(lower: str, upper: str, work: str) -> str | None:
    """The overlay's mount options, or None when a path holds a character they cannot carry."""
    paths = (lower, upper, work)
    if any(_OPTION_CHARS & set(p) for p in paths):
        return None
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


def enter_private_mount_namespace(libc=None) -> None:
    """This process (and every child it starts from now on) in a mount namespace of its own."""
    libc = libc or _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")


def mount_overlay(lower: str, pod: PodDir, libc=None) -> str | None:
    """The overlay at pod.rootfs (in this process's namespace, which must be private); None when
    done, else why not (the caller copies instead)."""
    libc = libc or _libc()
    lower = os.path.realpath(lower)
    options = overlay_options(lower, os.path.realpath(pod.stage1) + "/upper",
                              os.path.realpath(pod.stage1) + "/work")
    if options is None:
        return "a path has one of , : \\ or a line break, which overlayfs's options cannot carry"
    for path in (upper_dir(pod), work_dir(pod), pod.rootfs):
        os.makedirs(path, mode=0o755, exist_ok=True)
    os.chmod(upper_dir(pod), os.stat(lower).st_mode & 0o7777)  # the root's own mode, as the copy had
    result = libc.mount(b"overlay", os.fsencode(pod.rootfs), b"overlay", 0, os.fsencode(options))
    if result != 0:
        errno = ctypes.get_errno()
        for path in (upper_dir(pod), work_dir(pod)):
            os.rmdir(path)
        return f"mount -t overlay: {os.strerror(errno)}"
    return None


def unmount(pod: PodDir, libc=None) -> None:
    """Lazily unmount the overlay, if it is mounted here (a pod that ends; nothing to do for a copy)."""
    if os.path.ismount(pod.rootfs):
        libc = libc or _libc()
        libc.umount2(os.fsencode(pod.rootfs), MNT_DETACH)


UMOUNT = "umount"
DETACH_WAIT_SECONDS = 5.0


def detach(pod: PodDir, libc=None, umount: str = UMOUNT) -> str:
    """unmount() for a pod's end, without waiting for the kernel's cleanup (issue 20): how it went.

    The mount leaves the mount table at once (MNT_DETACH), but the overlay's cleanup, evicting the
    dentries and inodes QEMU's 9p server used, runs in the process whose umount2() dropped its last
    reference, before that call returns: 0.54 s of `kvmpod run`'s end after a one-line app, measured
    (umount2 alone, two mounts: the stage1 overlay and the app's). So `umount --lazy` does it, started
    in this mount namespace in a session of its own and not waited for; this process waits only
    until the mount is gone from its table, so nothing of the pod is mounted when kvmpod run returns,
    and the child finishes the cleanup after it (then init reaps it). It holds nothing but that
    detached mount, whose cleanup the kernel completes even if the child is killed. Should the child
    not detach it within DETACH_WAIT_SECONDS (no umount binary, an error), this process unmounts."""
    if not os.path.ismount(pod.rootfs):
        return "not mounted"
    try:
        subprocess.Popen([umount, "--lazy", pod.rootfs], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        unmount(pod, libc)
        return "unmounted here"
    deadline = time.monotonic() + DETACH_WAIT_SECONDS
    while os.path.ismount(pod.rootfs):
        if time.monotonic() > deadline:
            unmount(pod, libc)
            return "unmounted here"
        time.sleep(0.002)
    return "detached by umount"


def copy_root(source: str, dest: str) -> None:
    """A whole copy (the fallback for the stage1 root; an app's directory or unpacked image). cp -a
    keeps owners, modes, links, devices and xattrs; --reflink=auto is near-free on btrfs/xfs. It dies
    with kvmpod run (found by a SIGKILL while preparing: an orphan cp went on writing)."""
    proc = subprocess.run(["cp", "-a", "--reflink=auto", "--no-target-directory", source, dest],
                          capture_output=True, text=True, preexec_fn=die_with_parent)
    if proc.returncode != 0:
        raise OSError(f"cp -a {source} {dest}: {proc.stderr.strip()}")


def make_root(lower: str, pod: PodDir, private_namespace: bool) -> str:
    """The pod's root at pod.rootfs: an overlay when it can be, else a copy. Returns how, for run's
    progress line. `private_namespace`: this process already entered its own mount namespace."""
    why = "not root" if os.geteuid() != 0 else None
    if why is None and not private_namespace:
        try:
            enter_private_mount_namespace()
        except OSError as error:
            why = str(error)
    if why is None:
        why = mount_overlay(lower, pod)
        if why is None:
            return "overlay"
    os.makedirs(pod.stage1, exist_ok=True)
    copy_root(lower, pod.rootfs)
    return f"copy ({why})"
