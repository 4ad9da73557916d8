"""The generator's log: the kernel log at boot (nothing else is up yet), stderr otherwise."""

import os
import sys

ERR, WARNING, INFO, DEBUG = 3, 4, 6, 7


class Log:
    def __init__(self, program: str, *, use_kmsg: bool, verbose: bool):
        self.program = program
        self.verbose = verbose
        self._kmsg = None
        if use_kmsg:
            try:
                self._kmsg = open("/dev/kmsg", "w", buffering=1, encoding="utf-8", errors="replace")
            except OSError:
                self._kmsg = None  # fall back to stderr: better there than nowhere

    def _line(self, level: int, message: str) -> None:
        if level == DEBUG and not self.verbose:
            return
        for text in message.splitlines() or [""]:
            if self._kmsg is not None:
                try:
                    self._kmsg.write(f"<{level}>{self.program}[{os.getpid()}]: {text}\n")
                    continue
                except OSError:
                    self._kmsg = None
            sys.stderr.write(f"{self.program}: {text}\n")

    def error(self, message: str) -> None:
        self._line(ERR, message)

    def warning(self, message: str) -> None:
        self._line(WARNING, message)

    def debug(self, message: str) -> None:
        self._line(DEBUG, message)
