"""The pod directory's own devices on the hypervisor's command line (`kvmpod args --pod-dir`): the
pod share the guest's lifecycle writes each app's end into, the apps' output port and the QMP socket.
"""

import os

from ..pods import pod_dirs
from ..pods.pod_dirs import POD_SHARE_TAG, PodDir
from .volumes import qemu_9p_args, qemu_value


def pod_kernel_params(pod_path: str) -> list[str]:
    """Turns on the guest's pod lifecycle (kvmpod.guest.lifecycle) with the pod share's tag."""
    return [f"kvmpod.pod_share={POD_SHARE_TAG}"]


def qemu_pod_args(pod_path: str, security_model: str) -> list[str]:
    """The pod share, the apps' output port (the VM's second serial port, /dev/ttyS1, a file here)
    and the QMP socket kvmpod stop presses the power button through."""
    pod = PodDir(os.path.abspath(pod_path))
    os.makedirs(pod_dirs.QMP_DIR, mode=0o700, exist_ok=True)
    return [
        "-chardev", f"file,id=apps,path={qemu_value(pod.apps_log)}",
        "-serial", "chardev:apps",
        "-qmp", f"unix:{qemu_value(pod.qmp)},server=on,wait=off",
        *qemu_9p_args("pod", pod.share, POD_SHARE_TAG, security_model, read_only=False),
    ]


def lkvm_pod_args(pod_path: str) -> list[str]:
    """lkvm: the pod share only (its one console carries the apps' output with the rest)."""
    return [f"--9p={os.path.abspath(PodDir(pod_path).share)},{POD_SHARE_TAG}"]
