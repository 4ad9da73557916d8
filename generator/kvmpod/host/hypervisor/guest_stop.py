"""How kvmpod asks a QEMU guest to stop cleanly (kvmpod run on Ctrl-C, SIGTERM, `machinectl poweroff`'s
SIGRTMIN+4; kvmpod stop): the apps get SIGTERM in the guest's shutdown and their ends are recorded.

Ctrl-Alt-Del (QMP `send-key`) is the way since issue 20's fourth round: the stage1 masks logind, which
turned a press of the ACPI power button (QMP `system_powerdown`) into a poweroff (still pressed, for a
guest that has a logind). Why Ctrl-Alt-Del came in, while logind still answered the button: a press
is lost while the guest boots: QEMU drops it while the guest has not
enabled the button's event (Debian's kernel has the ACPI button driver as a module, which udev loads),
and it counts only once logind runs and has opened the button's input device. Under load a TCG guest
got there after its apps had started: a kept pod's journal showed logind at 164 s and the button at
167 s after boot, the stop having been asked for at 20 s, so every press for 180 s was lost and the VM
was killed with no record of its app. That is what `machinectl poweroff` met in the systemd-host boot
(it is the first stop there, issued as soon as the pods' apps had started) and what `kvmpod stop` or
Ctrl-C early in a pod's boot met as well.

So a press the guest did not answer (the VM still runs when the button is pressed again) is followed
by Ctrl-Alt-Del (QMP `send-key`), which needs no driver to be loaded and no logind: the kernel's
keyboard driver (built in) passes it to PID 1 as SIGINT once systemd has asked for that
(`reboot(RB_DISABLE_CAD)`, in its manager's setup), and systemd starts ctrl-alt-del.target
(reboot.target): the same clean shutdown, after which QEMU's `-no-reboot` ends the VM on the reset.
Before systemd's manager is set up, Ctrl-Alt-Del resets the machine at once (seen: one sent as
'systemd[1]:' first showed on the console restarted the guest with no shutdown), so it is sent only
once the guest shows that manager running: its status lines on the console (`[  OK  ] ...`), or an
app's output.
"""

import os
import re

from ..pods.pod_dirs import PodDir
from .qmp import QMPError, qmp_command

CTRL_ALT_DEL = {"keys": [{"type": "qcode", "data": key} for key in ("ctrl", "alt", "delete")]}
_STATUS_LINE = re.compile(rb"\[(?:\x1b\[[0-9;]*m)*\s+OK\s+(?:\x1b\[[0-9;]*m)*\]")
SCAN_BYTES = 1024 * 1024  # of the console log, for kvmpod stop


def press_power_button(pod: PodDir) -> str | None:
    """QMP system_powerdown; None when QEMU took it, else why not."""
    return _qmp(pod, "system_powerdown")


def press_ctrl_alt_del(pod: PodDir) -> str | None:
    return _qmp(pod, "send-key", CTRL_ALT_DEL)


def _qmp(pod: PodDir, command: str, arguments: dict | None = None) -> str | None:
    try:
        qmp_command(pod.qmp, command, arguments=arguments)
        return None
    except QMPError as error:
        return str(error)


def manager_running(console_text: bytes | str) -> bool:
    """True when the console shows systemd's manager at work (a status line): Ctrl-Alt-Del is then its."""
    data = console_text.encode("utf-8", "surrogateescape") if isinstance(console_text, str) else console_text
    return _STATUS_LINE.search(data) is not None


def manager_running_in(pod: PodDir) -> bool:
    """The same for a pod another process runs (kvmpod stop): its console log, or an app's output."""
    if os.path.exists(pod.console + ".1"):
        return True  # rotated: the console went on long past systemd's start
    for path in (pod.console, pod.apps_log):
        try:
            with open(path, "rb") as log:
                data = log.read(SCAN_BYTES)
        except OSError:
            continue
        if path == pod.apps_log and data.strip():
            return True
        if path == pod.console and manager_running(data):
            return True
    return False


def ask_to_stop(pod: PodDir, manager_is_running: bool) -> str | None:
    """Ctrl-Alt-Del once systemd's manager runs, and the power button. None when QEMU took the power
    button, else why not, as press_power_button says it (kvmpod run and kvmpod stop press again every
    PRESS_AGAIN_SECONDS until the VM is gone).

    Since issue 20's fourth round the stage1 has no logind (images/stage1_trim.py): nothing in a pod
    answers the power button, and Ctrl-Alt-Del is how a stop reaches systemd, at the first press (it
    came only with a press again, 15 s later, while logind answered the first). The power button
    still goes too: a guest with a logind (one booted with an older stage1, or `kvmpod args`'s) or a
    guest whose manager is not yet running takes it."""
    if manager_is_running:
        press_ctrl_alt_del(pod)
    return press_power_button(pod)
