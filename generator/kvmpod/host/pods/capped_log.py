"""The pod's logs on the host, bounded: what the guest sends is untrusted and may never stop.

QEMU does not write the pod's log files itself: its apps' output port and its console are sockets
(`-chardev socket,server=on,wait=off`) that `kvmpod run` reads and writes here, through CappedLog:

- each file is kept under `cap` bytes (LOG_CAP); when the next write would pass it, the file is
  renamed to `<name>.1` (replacing the previous `.1`) and a new file is started: the oldest output
  is what is dropped, and at most 2 x cap bytes per log are ever on disk;
- lines longer than MAX_LINE are cut into pieces of MAX_LINE bytes (each shown and kept);
- a reader that stops (kvmpod run killed) does not block the guest: QEMU drops what a socket chardev
  with no client cannot send, and it dies with kvmpod run anyway (PR_SET_PDEATHSIG).
"""

import os

LOG_CAP = 8 * 1024 * 1024  # bytes per file; with the one rotated file, 16 MiB per log at most
LOG_CAP_ENV = "KVMPOD_LOG_CAP"  # another cap, in bytes (at least MIN_LOG_CAP)
MIN_LOG_CAP = 4096
MAX_LINE = 64 * 1024
ROTATED_SUFFIX = ".1"


def log_cap(environ=os.environ) -> int:
    """LOG_CAP, or $KVMPOD_LOG_CAP; ValueError naming the variable when it is not a size kvmpod takes."""
    text = environ.get(LOG_CAP_ENV)
    if not text:
        return LOG_CAP
    if not text.isdigit() or int(text) < MIN_LOG_CAP:
        raise ValueError(f"{LOG_CAP_ENV}={text!r}: give a number of bytes, at least {MIN_LOG_CAP}")
    return int(text)


class CappedLog:
    """An append-only file that never grows past `cap` bytes; the older half rotates to `.1`.

    A write the file system refuses (ENOSPC, EDQUOT, EIO: a disk that filled up while the pod runs)
    drops those bytes, never stops the caller: `dropped` counts them and `error` keeps the first
    reason, for one line when the pod ends."""

    def __init__(self, path: str, cap: int = LOG_CAP):
        if cap < 1:
            raise ValueError("cap must be positive")
        self.path = path
        self.cap = cap
        self._file = open(path, "ab", buffering=0)  # unbuffered: a refused write is known at once
        self._size = self._file.tell()
        self.dropped = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        while data:
            try:
                if self._size >= self.cap:
                    self._rotate()
                room = self.cap - self._size
                written = self._file.write(data[:room]) or 0
            except OSError as error:
                self.dropped += len(data)
                self.error = self.error or error
                return
            self._size += written
            data = data[written:]

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path + ROTATED_SUFFIX)
        self._file = open(self.path, "ab", buffering=0)
        self._size = 0

    def close(self) -> None:
        self._file.close()


class LineSplitter:
    """Bytes in, whole lines out; a partial line is held up to MAX_LINE bytes, never more."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        data = self.partial + data
        *whole, self.partial = data.split(b"\n")
        out = []
        for line in whole:
            out += self._cut(line)
        while len(self.partial) > self.max_line:
            out.append(self._decode(self.partial[:self.max_line]))
            self.partial = self.partial[self.max_line:]
        return out

    def flush(self) -> list[str]:
        rest, self.partial = self.partial, b""
        return [self._decode(rest)] if rest else []

    def _cut(self, line: bytes) -> list[str]:
        return [self._decode(line[i:i + self.max_line]) for i in range(0, max(len(line), 1), self.max_line)]

    @staticmethod
    def _decode(line: bytes) -> str:
        return line.rstrip(b"\r").decode("utf-8", "replace")


READ_CHUNK = 64 * 1024
MAX_READ_PER_TICK = 1024 * 1024  # per source and poll: a flood cannot starve the rest of the loop


class LogSource:
    """One stream the hypervisor writes (a socket chardev it serves, or its stdout pipe), copied into a
    CappedLog and split into lines for the terminal."""

    def __init__(self, log: CappedLog, *, socket_path: str | None = None, fd: int | None = None):
        self.log = log
        self.socket_path = socket_path
        self.sock = None
        self.fd = fd
        self.ended = False
        self.splitter = LineSplitter()
        if fd is not None:
            os.set_blocking(fd, False)

    def fileno(self) -> int | None:
        if self.sock is not None:
            return self.sock.fileno()
        return self.fd

    def connect(self) -> bool:
        """For a socket source: try once to connect to the hypervisor's socket (True once connected)."""
        if self.fd is not None or self.sock is not None:
            return True
        if self.ended or self.socket_path is None:
            return False
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        self.sock = sock
        return True

    def _read(self) -> bytes | None:
        """Some bytes; b"" at the end; None when nothing is there now."""
        try:
            if self.sock is not None:
                return self.sock.recv(READ_CHUNK)
            if self.fd is not None:
                return os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        return None

    def lines(self, final: bool = False) -> list[str]:
        """What arrived since the last call, written to the log; the whole lines of it."""
        out: list[str] = []
        taken = 0
        while not self.ended and (final or taken < MAX_READ_PER_TICK):
            data = self._read()
            if data is None:
                break
            if not data:
                self.close()
                break
            taken += len(data)
            self.log.write(data)
            out += self.splitter.feed(data)
        if final or self.ended:
            out += self.splitter.flush()
        return out

    def close(self) -> None:
        self.ended = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
