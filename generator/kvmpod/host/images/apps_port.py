"""The apps' output port in the stage1: /dev/ttyS1 with CTS flow control on, so no line loses its tail,
and held open, so journald's writes need not wait for the port.

journald copies the apps' lines to its TTYPath (stage1.JOURNALD_SETTINGS) by opening the tty,
writing one line and closing it again, for every line. That close is the port's last, and Linux
(6.1, the stage1's kernel; drivers/tty/serial/serial_core.c, uart_wait_until_sent) waits for the
UART's transmitter to empty for at most twice the time the FIFO takes to send at the port's speed
(2 x (16 chars at 9600 baud + 20 ms) = ~80 ms) unless CTS flow control is on; then it shuts the
port down, and the 8250 driver's shutdown clears the FIFO (FCR CLEAR_XMIT): whatever the UART had
not sent yet is dropped, the end of a line. QEMU's 16550 (hw/char/serial.c) sends a byte only when
its chardev takes it: `kvmpod run` reads the chardev's socket, and with room for only ~280 bytes
written one at a time (each is its own socket buffer of ~760 bytes against a 208 KiB send buffer),
a host reader held up for ~100 ms (a busy host) stalls the UART past that wait. An e2e boot showed
it: one line of 12,000 reached the host with its last 8 bytes lost, glued to the next line;
tests/benchmarks/bench_serial_flood.py reproduces it (one open, write and close per line, a reader
that stalls 200 ms every 500 ms: 14 of 15,000 lines cut in 5 TCG boots, none with crtscts, none held
open; none either way with a reader that never stalls).

With CRTSCTS in the port's termios the kernel does not clamp that wait: a close waits until the
UART has sent everything (within the port's closing_wait, 30 s by default) and the FIFO is empty
when it is cleared. QEMU's 16550 shows CTS raised whenever its chardev has no modem lines to
report (a socket has none), so flow control never holds a byte back. The termios stays with the
port between opens (serial_core asks the tty layer to keep them), so one `stty` before the apps is enough;
a last close still gives up after 30 s, and a host reader stalled that long there would still cost
a line's tail. The unit runs in sysinit, before any app. A port stty cannot set
fails the unit (shown on the console and in the journal), not the boot.

Held open by the unit's shell for the pod's life, journald's close is never the port's last: no
start-up and shut-down of the UART per line, no wait for the port to send each line; journald's
write returns once the line is in the tty's 4 KiB buffer (and waits when that is full: the host
still sets the pace). bench_serial_flood.py: 1,600-2,400 lines a second instead of 170-870 (TCG). The shell
leaves at systemd-shutdown's SIGTERM, after the apps, or when a pod whose apps have all ended stops it
before its immediate poweroff (kvmpod-pod-done.target, guest/lifecycle.py), and its close waits for
the port to send what is left (crtscts); journald's lines after that are closed one by one again, as
safely.
"""

import os
from pathlib import Path

from ...guest.lifecycle import APPS_PORT_UNIT

APPS_TTY = "/dev/ttyS1"
UNIT_NAME = APPS_PORT_UNIT  # the pod's end stops it first, so its close drains the port (guest/lifecycle.py)
UNIT_DIR = "etc/systemd/system"
STTY = "/usr/bin/stty"
# The holder: a shell that keeps the port open on its stdout (systemd opens it O_NOCTTY: no controlling
# tty, so no hangup of the port when it exits) and, on SIGTERM, exits on its own: a process a signal
# kills closes its files with that signal pending, and the close's wait for the port to send is
# interruptible (tty_wait_until_sent), so it would not wait.
HOLD = "trap 'exit 0' TERM; sleep infinity >/dev/null & wait"
UNIT = f"""# kvmpod: the apps' output port, flow-controlled and held open (kvmpod/host/images/apps_port.py)
[Unit]
Description=kvmpod apps' output port: CTS flow control on {APPS_TTY}, held open
Documentation=man:kvmpod(1)
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=exec
ExecStartPre={STTY} -F {APPS_TTY} crtscts
ExecStart=/bin/sh -c "{HOLD}"
StandardOutput=file:{APPS_TTY}
StandardError=journal
"""


def install(root: Path) -> None:
    """The unit in the stage1 root, wanted by sysinit.target."""
    units = root / UNIT_DIR
    units.mkdir(parents=True, exist_ok=True)
    (units / UNIT_NAME).write_text(UNIT)
    wants = units / "sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / UNIT_NAME
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(f"../{UNIT_NAME}", link)
