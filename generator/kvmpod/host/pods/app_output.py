"""What `kvmpod run` shows while a pod runs: the apps' lines as the guest sends them, and the boot's
progress on one line of a terminal.

The apps' output arrives on the VM's second serial port, written to <pod>/apps.log by QEMU: the
guest's journald copies there every line of a unit with StandardOutput=journal+console, which
kvmpod gives every app, formatted as rkt showed them: "[   12.345678] app[42]: line". A file (not a
pipe) so the guest never blocks on a slow or vanished reader and the output stays in the pod
directory. The console (<pod>/console.log) gives the boot's progress: systemd's last status line.
"""

import re
import shutil

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STATUS = re.compile(r"^\[\s*(?:OK|FAILED|DEPEND|TIME)\s*\]\s+(.*)$")
MAX_LINE = 64 * 1024
MAX_READ = 1024 * 1024  # per poll: a guest flooding its serial port costs kvmpod run bounded memory
MAX_FINAL_READ = 16 * MAX_READ


class Follower:
    """Reads what a growing file gained since the last call, as whole lines."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                # the last call drains what is left, up to MAX_FINAL_READ more (apps.log keeps it all)
                data = f.read(MAX_FINAL_READ if final else MAX_READ)
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *whole, self.partial = data.split(b"\n")
        if len(self.partial) > MAX_LINE or (final and self.partial):
            whole.append(self.partial)
            self.partial = b""
        return [w.rstrip(b"\r").decode("utf-8", "replace") for w in whole]


def boot_status(console_lines: list[str]) -> str | None:
    """systemd's last "[  OK  ] Started ..." (or kernel) line, for the progress line."""
    for line in reversed(console_lines):
        plain = _ANSI.sub("", line).strip()
        match = _STATUS.match(plain)
        if match:
            return match.group(1)
        if plain.startswith("[") and "]" in plain:  # a kernel line: "[    1.234567] ..."
            return plain.split("]", 1)[1].strip() or None
    return None


class Progress:
    """One line on a terminal's stderr, rewritten in place; silent when stderr is not a terminal."""

    def __init__(self, stream):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def app_line_name(line: str) -> str | None:
    """The app a line is from: "[  12.3] app[42]: text" -> "app"."""
    rest = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
    head = rest.split(": ", 1)[0]
    return head.split("[", 1)[0] if "[" in head else (head if ": " in rest else None)
