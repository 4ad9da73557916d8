"""The pod directory's own devices on the hypervisor's command line (`kvmpod args --pod-dir`): the
pod share the guest's lifecycle writes each app's end into, the apps' output port and the QMP socket.
"""

import os

from ..pods import pod_dirs
from ..pods.pod_dirs import POD_SHARE_TAG, PodDir
from .volumes import qemu_9p_args, qemu_value


# The pod share's cap: a size-capped tmpfs in the supervisor's namespace (supervisor.mount_pod_share).
# The guest writes one record of ~200 bytes per app there; root in a hostile guest can write no more.
POD_SHARE_BYTES = 4 * 1024 * 1024


def pod_share(pod_path: str | None) -> tuple[str, int] | None:
    """The supervisor's --pod-share for a pod directory (None without one)."""
    return None if pod_path is None else (os.path.abspath(PodDir(pod_path).share), POD_SHARE_BYTES)


def pod_kernel_params(pod_path: str) -> list[str]:
    """Turns on the guest's pod lifecycle (kvmpod.guest.lifecycle) with the pod share's tag."""
    return [f"kvmpod.pod_share={POD_SHARE_TAG}"]


ENTER_PORT_NAME = "kvmpod.enter"  # /dev/virtio-ports/kvmpod.enter in the guest (guest.enter_protocol)


def socket_chardev(chardev_id: str, path: str) -> str:
    """A chardev QEMU serves on a UNIX socket for kvmpod run to read. wait=off: QEMU never waits for
    the reader, and drops what it cannot send while none is connected (a reader gone never blocks
    the guest; kvmpod run connects within milliseconds of QEMU making the socket)."""
    return f"socket,id={chardev_id},path={qemu_value(path)},server=on,wait=off"


def qemu_pod_args(pod_path: str, security_model: str) -> list[str]:
    """The pod share, the apps' output port (the VM's second serial port, /dev/ttyS1), the enter
    port (a virtio-serial port named kvmpod.enter) and the QMP socket kvmpod stop presses the power
    button through. The ports are sockets in /run/kvmpod (0700) that kvmpod run reads: it caps the
    logs (host.pods.capped_log) and relays `kvmpod enter` (host.pods.enter_relay)."""
    pod = PodDir(os.path.abspath(pod_path))
    os.makedirs(pod_dirs.QMP_DIR, mode=0o700, exist_ok=True)
    return [
        "-chardev", socket_chardev("apps", pod.apps_socket),
        "-serial", "chardev:apps",
        "-device", "virtio-serial-pci,id=kvmpod-serial",
        "-chardev", socket_chardev("enter", pod.enter_port),
        "-device", f"virtserialport,bus=kvmpod-serial.0,chardev=enter,name={ENTER_PORT_NAME}",
        "-qmp", f"unix:{qemu_value(pod.qmp)},server=on,wait=off",
        *qemu_9p_args("pod", pod.share, POD_SHARE_TAG, security_model, read_only=False),
    ]


def qemu_console_chardev(pod_path: str) -> str:
    """The console as kvmpod run boots it: a socket it reads (and caps into console.log)."""
    return "socket:" + PodDir(os.path.abspath(pod_path)).console_socket


def lkvm_pod_args(pod_path: str) -> list[str]:
    """lkvm: the pod share only (its one console carries the apps' output with the rest)."""
    return [f"--9p={os.path.abspath(PodDir(pod_path).share)},{POD_SHARE_TAG}"]
