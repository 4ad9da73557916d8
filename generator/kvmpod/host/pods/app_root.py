"""An app's rootfs from the image store: an overlay of the stored image, not a copy (issue 20).

    <pod>/stage1/apps/<app>/upper/   what the app (and kvmpod's staging) writes into its root; kept
                                     with --keep, beside the stage1's own upper dir
    <pod>/stage1/apps/<app>/work/    overlayfs's work directory
    <pod root>/opt/stage2/<app>/rootfs   the mount point, in the pod's root (itself the stage1 overlay):
                                     lower = the store entry's rootfs/ (read-only, shared by every pod
                                     of that image), upper = the app's own directory above

The same design as the stage1's overlay (host.pods.pod_root): mounted in kvmpod run's own mount
namespace, which QEMU inherits and which ends with the last of kvmpod run's processes, so a killed
pod leaves no mount anywhere, and a pod that ends unmounts the stage1's overlay lazily, which takes
the apps' overlays with it. A store entry is immutable once renamed into place and a running pod's
images are never removed (store.record_use), so the lower layer cannot change under the pod. The
pod's root now spans two filesystems: QEMU exports it with multidevs=remap (hypervisor.argv), so
inode numbers of the two never collide in the guest.

Only store entries get an overlay: an app given as a plain directory is the user's, which may change
while the pod runs, and is copied as rkt copied it; an .aci is unpacked. When the stage1 root is a
copy (no overlay: not root, no overlayfs), the app's rootfs is a copy too.
"""

import os
import shutil

from ...pod.mounts import STAGE2_DIR
from . import pod_root
from .pod_dirs import PodDir


def app_dir(pod: PodDir, app: str) -> str:
    """The app's own files beside the stage1's: its overlay's upper and work dirs."""
    return os.path.join(pod.stage1, "apps", app)


def mount_point(pod: PodDir, app: str) -> str:
    return os.path.join(pod.rootfs, STAGE2_DIR.lstrip("/"), app, "rootfs")


def mount_store_app(pod: PodDir, app: str, entry: str, libc=None) -> str | None:
    """The app's /opt/stage2/<app> from the store entry `entry` (manifest, rootfs/): its manifest
    copied, its rootfs an overlay of the entry's. Call in the private namespace the pod's root was
    mounted in. None when done, else why not (nothing of the app is left: the caller copies)."""
    libc = libc or pod_root._libc()
    lower = os.path.realpath(os.path.join(entry, "rootfs"))
    own = os.path.realpath(app_dir(pod, app))
    upper, work = os.path.join(own, "upper"), os.path.join(own, "work")
    options = pod_root.overlay_options(lower, upper, work)
    if options is None:
        return "a path has one of , : \\ or a line break, which overlayfs's options cannot carry"
    target = mount_point(pod, app)
    stage2 = os.path.dirname(target)
    os.makedirs(stage2, exist_ok=False)  # a second app of that name is a bug upstream: fail loudly
    try:
        for path in (upper, work, target):
            os.makedirs(path, mode=0o755)
        info = os.stat(lower)
        os.chown(upper, info.st_uid, info.st_gid)  # the root's owner and mode, as the copy had
        os.chmod(upper, info.st_mode & 0o7777)
        pod_root._check(libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, os.fsencode(options)),
                        "mount -t overlay")
        shutil.copyfile(os.path.join(entry, "manifest"), os.path.join(stage2, "manifest"))
    except OSError as error:
        if os.path.ismount(target):
            libc.umount2(os.fsencode(target), pod_root.MNT_DETACH)
        shutil.rmtree(stage2, ignore_errors=True)
        shutil.rmtree(own, ignore_errors=True)
        return error.strerror or str(error)
    return None
