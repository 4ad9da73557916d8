"""`kvmpod enter`'s server in the guest: `python3 -m kvmpod.guest.enter_server`, started on demand by
kvmpod-enter@<port>.socket (ListenSpecial= on the virtio-serial port /dev/vportNpM named kvmpod.enter, which
udev's rule wants once the port exists) with the port as its standard input. Never on the boot path.

Each OPEN starts the command as a transient service, `kvmpod-enter-<app>-<n>.service`, with the app
unit's own settings read from systemd over D-Bus (pystemd): RootDirectory=, User=, Group=,
SupplementaryGroups=, WorkingDirectory=, Environment=, MountAPIVFS=, PrivateDevices=. The app's
volumes are bind mounts inside its root directory in the guest's mount namespace, so the command sees
them. With a TTY the server opens a pseudo-terminal, gives its path to the unit (TTYPath=,
StandardInput=tty: systemd makes it the command's controlling terminal, so Ctrl-C reaches the
foreground process group) and relays the master; otherwise the unit gets pipes
(StandardInputFileDescriptor= ...). RemainAfterExit=yes keeps the unit until its status is read
(ExecMainCode, ExecMainStatus: 128+N for a signal), then it is stopped, which also ends anything
the command left behind.
"""

import fcntl
import os
import select
import selectors
import signal
import struct
import sys
import termios
import time

from . import enter_protocol as p

STATE_POLL_SECONDS = 0.2
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
COPIED = ("RootDirectory", "User", "Group", "SupplementaryGroups", "WorkingDirectory", "Environment",
          "MountAPIVFS", "PrivateDevices")
DEFAULT_COMMAND = "/bin/sh"
_CODES_KILLED = (2, 3)  # CLD_KILLED, CLD_DUMPED
MAX_PENDING_STDIN = p.STDIN_WINDOW + p.MAX_PAYLOAD
DRAIN_SECONDS = 5.0
DRAIN_QUIET_SECONDS = 0.3


class SessionError(Exception):
    pass


def _text(value) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def resolve_command(root: str, argv0: str) -> str:
    """argv0 inside the app's root: an absolute path that exists there, or a name on the PATH."""
    if "/" in argv0:
        if not argv0.startswith("/"):
            raise SessionError(f"{argv0}: give an absolute path or a command name")
        if not os.path.lexists(root.rstrip("/") + argv0):
            raise SessionError(f"{argv0} is not in the app's image ({root})")
        return argv0
    for directory in SEARCH_PATH:
        if os.path.lexists(f"{root.rstrip('/')}{directory}/{argv0}"):
            return f"{directory}/{argv0}"
    raise SessionError(f"{argv0} is not on the PATH in the app's image ({root})")


def exec_argv(path: str, argv: list[str]) -> list[bytes]:
    """ExecStart= words: systemd expands $VAR in the arguments of a transient unit too, so every "$"
    is doubled there (never in the program's path), and each word arrives as written."""
    return [os.fsencode(path), *[os.fsencode(a.replace("$", "$$")) for a in argv[1:]]]


def app_settings(app: str) -> dict[bytes, object]:
    """The settings of <app>.service that make the app's environment, as StartTransientUnit takes them."""
    from pystemd.systemd1 import Unit

    unit = Unit(f"{app}.service".encode(), _autoload=True)
    if _text(unit.Unit.LoadState) != "loaded":
        raise SessionError(f"the pod has no app {app!r} ({app}.service is {_text(unit.Unit.LoadState)})")
    settings: dict[bytes, object] = {}
    for name in COPIED:
        value = getattr(unit.Service, name)
        if value in (b"", [], None):
            continue
        settings[name.encode()] = value
    return settings


class Session:
    def __init__(self, server: "Server", channel: int, request: dict):
        self.server = server
        self.channel = channel
        self.unit_name = f"kvmpod-enter-{request['app']}-{channel}-{os.getpid()}.service".encode()
        self.unit = None
        self.status: int | None = None
        self.stdin_fd = self.master = self.slave = None
        self.outputs: dict[int, int] = {}  # fd -> STDOUT/STDERR
        self.pending = bytearray()
        self.stdin_eof = False
        self.start(request)

    def start(self, request: dict) -> None:
        import pystemd.run

        settings = app_settings(request["app"])
        root = _text(settings.get(b"RootDirectory", b"/"))
        argv = request["argv"] or [DEFAULT_COMMAND]
        path = resolve_command(root, argv[0])
        env = {}
        if request["tty"] and request["term"]:
            env[b"TERM"] = request["term"].encode()
        extra = dict(settings)
        if env:
            extra[b"Environment"] = list(extra.get(b"Environment", [])) + [b"TERM=" + env[b"TERM"]]
        if request["tty"]:
            self.master, self.slave = os.openpty()
            if request["rows"] and request["cols"]:
                self.resize(request["rows"], request["cols"])
            os.set_blocking(self.master, False)
            self.outputs[self.master] = p.STDOUT
            self.unit = pystemd.run(exec_argv(path, argv), name=self.unit_name,
                                    pty_path=os.ttyname(self.slave).encode(), remain_after_exit=True,
                                    user_mode=False, extra=extra)
            self.stdin_fd = self.master
        else:
            child_in, self.stdin_fd = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            try:
                self.unit = pystemd.run(exec_argv(path, argv), name=self.unit_name,
                                        stdin=child_in, stdout=out_w, stderr=err_w, remain_after_exit=True,
                                        user_mode=False, extra=extra)
            finally:
                for fd in (child_in, out_w, err_w):
                    os.close(fd)
            for fd, kind in ((out_r, p.STDOUT), (err_r, p.STDERR)):
                os.set_blocking(fd, False)
                self.outputs[fd] = kind
            os.set_blocking(self.stdin_fd, False)
        for fd in self.outputs:
            self.server.selector.register(fd, selectors.EVENT_READ, (self, fd))

    def resize(self, rows: int, cols: int) -> None:
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def signal(self, signum: int) -> None:
        if self.unit is not None and 0 < signum < 65:
            try:
                self.unit.Unit.Kill(b"main", signum)
            except Exception:
                pass

    def feed_stdin(self, data: bytes) -> None:
        if self.stdin_fd is None or self.stdin_eof:
            return
        if len(self.pending) + len(data) > MAX_PENDING_STDIN:
            raise p.ProtocolError("stdin beyond the window")  # the host keeps to STDIN_WINDOW
        self.pending += data
        self.flush_stdin()

    def flush_stdin(self) -> None:
        written = 0
        while self.pending and self.stdin_fd is not None:
            try:
                n = os.write(self.stdin_fd, self.pending[:p.MAX_PAYLOAD])
            except BlockingIOError:
                break
            except OSError:  # the command closed its stdin: what it did not take is dropped
                written += len(self.pending)
                self.pending.clear()
                break
            del self.pending[:n]
            written += n
        if written:
            self.server.send(self.channel, p.STDIN_ACK, p.pack_count(written))
        if not self.pending and self.stdin_eof and self.master is None and self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None

    def end_stdin(self) -> None:
        self.stdin_eof = True
        if self.master is None:
            self.flush_stdin()

    def read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, p.MAX_PAYLOAD)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's last user closed it
            data = b""
        if data:
            self.server.send(self.channel, self.outputs[fd], data)
        elif fd != self.master:
            self.server.selector.unregister(fd)
            os.close(fd)
            del self.outputs[fd]

    def poll_end(self) -> bool:
        """True when the command has ended and its status is known."""
        if self.status is not None or self.unit is None:
            return self.status is not None
        service = self.unit.Service
        if int(service.MainPID) != 0 or _text(self.unit.Unit.SubState) not in ("exited", "failed", "dead"):
            return False
        code, status = int(service.ExecMainCode), int(service.ExecMainStatus)
        self.status = 128 + status if code in _CODES_KILLED else status
        return True

    def stop_unit(self) -> None:
        if self.unit is None:
            return
        from pystemd.systemd1 import Manager

        try:
            with Manager() as manager:
                try:
                    manager.Manager.StopUnit(self.unit_name, b"replace")
                except Exception:
                    pass
                try:
                    manager.Manager.ResetFailedUnit(self.unit_name)
                except Exception:
                    pass
        except Exception:
            pass

    def finish(self, send_exit: bool) -> None:
        """Stop the unit (ending what the command left running), pass on what it wrote, send EXIT.
        Never blocks: the unit keeps a copy of the pipes' write ends until systemd unloads it, so the
        output is read until it has been quiet for DRAIN_QUIET_SECONDS (at most DRAIN_SECONDS)."""
        self.stop_unit()
        deadline = time.monotonic() + DRAIN_SECONDS
        quiet_since = time.monotonic()
        while self.outputs and time.monotonic() < deadline:
            ready, _, _ = select.select(list(self.outputs), [], [], DRAIN_QUIET_SECONDS / 2)
            if not ready:
                if time.monotonic() - quiet_since >= DRAIN_QUIET_SECONDS:
                    break
                continue
            quiet_since = time.monotonic()
            for fd in ready:
                try:
                    data = os.read(fd, p.MAX_PAYLOAD)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    if send_exit:
                        self.server.send(self.channel, self.outputs[fd], data)
                    continue
                self.server.selector.unregister(fd)
                if fd != self.master:
                    os.close(fd)
                del self.outputs[fd]
        for fd in list(self.outputs):
            self.server.selector.unregister(fd)
            if fd != self.master:
                os.close(fd)
        self.outputs.clear()
        for fd in {self.master, self.slave, self.stdin_fd} - {None}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = self.stdin_fd = None
        if send_exit:
            self.server.send(self.channel, p.EXIT, p.pack_status(self.status if self.status is not None else 255))


class Server:
    def __init__(self, port_fd: int):
        self.port = port_fd
        os.set_blocking(self.port, True)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.port, selectors.EVENT_READ, None)
        self.reader = p.FrameReader(p.TO_GUEST)
        self.sessions: dict[int, Session] = {}

    def send(self, channel: int, kind: int, payload: bytes = b"") -> None:
        data = p.frames(channel, kind, payload) if payload else p.frame(channel, kind)
        while data:
            n = os.write(self.port, data)
            data = data[n:]

    def handle(self, channel: int, kind: int, payload: bytes) -> None:
        session = self.sessions.get(channel)
        if kind == p.OPEN:
            if session is not None:
                return
            try:
                self.sessions[channel] = Session(self, channel, p.parse_open(payload))
                self.send(channel, p.STARTED)
            except (SessionError, p.ProtocolError) as error:
                self.send(channel, p.ERROR, str(error).encode())
            except Exception as error:  # D-Bus refused the unit, ...: the host sees why
                self.send(channel, p.ERROR, f"cannot start the command: {error}".encode())
            return
        if session is None:
            return
        if kind == p.STDIN:
            session.feed_stdin(payload)
        elif kind == p.STDIN_EOF:
            session.end_stdin()
        elif kind == p.RESIZE:
            session.resize(*p.unpack_size(payload))
        elif kind == p.SIGNAL:
            session.signal(payload[0])
        elif kind == p.CLOSE:
            del self.sessions[channel]
            session.finish(send_exit=False)

    def run(self) -> int:
        next_poll = 0.0
        while True:
            timeout = STATE_POLL_SECONDS if self.sessions else None
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    try:
                        data = os.read(self.port, p.MAX_PAYLOAD + p.HEADER.size)
                    except OSError:
                        data = b""
                    if not data:
                        return 0  # the host is gone (the VM is stopping)
                    for channel, kind, payload in self.reader.feed(data):
                        self.handle(channel, kind, payload)
                else:
                    session, fd = key.data
                    if fd in session.outputs:
                        session.read_output(fd)
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + STATE_POLL_SECONDS
                for channel, session in list(self.sessions.items()):
                    session.flush_stdin()
                    if session.poll_end():
                        del self.sessions[channel]
                        session.finish(send_exit=True)


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return Server(0).run()
    except p.ProtocolError as error:
        sys.stderr.write(f"kvmpod-enter: the host sent a malformed frame: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
