"""`kvmpod enter`'s server in the guest: `python3 -m kvmpod.guest.enter_server`, started on demand by
kvmpod-enter@<port>.socket (ListenSpecial= on the virtio-serial port /dev/vportNpM named kvmpod.enter, which
udev's rule wants once the port exists) with the port as its standard input. Never on the boot path.

One server holds the one port for the pod's life and serves every `kvmpod enter` at once: the host's
relay gives each enter a channel and the frames of all of them share the port (enter_protocol).
Several ports would cap the number of enters at the number of ports QEMU was given at boot, and
each would need its own host connection; one multiplexed port has neither limit. The server never
waits on one session: command output is read as it comes, stdin is written as the command takes it
(the host keeps within STDIN_WINDOW per channel, acknowledged by STDIN_ACK), and a write to the port
waits only on the host relay, which always reads.

Each OPEN starts the command as a transient service, `kvmpod-enter-<app>-<n>.service`, with the app
unit's own settings read from systemd over D-Bus (pystemd): the ones in COPIED, which make the app's
filesystem, identity and environment (see there), and JoinsNamespaceOf=<app>.service with
PrivateTmp=: the command shares the app's own /tmp and /var/tmp (a fresh PrivateTmp= would hide
them: a boot showed `cat > /tmp/x` refused for the app's user, and a file one enter left in /tmp
unseen by the next). The app's volumes are bind mounts inside its root directory in the guest's
mount namespace, so the command sees them. With a TTY the server opens a pseudo-terminal, gives its
path to the unit (TTYPath=, StandardInput=tty: systemd makes it the command's controlling terminal,
so Ctrl-C reaches the foreground process group) and relays the master; otherwise the unit gets
pipes (StandardInputFileDescriptor= ...). RemainAfterExit=yes keeps the unit until its status is
read (ExecMainCode, ExecMainStatus: 128+N for a signal), then it is stopped, which also ends
anything the command left behind.
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
# The app unit's settings an entered command gets (app_services.py, app_environment.py,
# app_isolators.py): its root, identity, directory and environment; the mounts systemd makes around
# the root (API filesystems, /dev, /tmp, read-only and hidden paths, binds); its capability bounding
# set and no-new-privileges. Not copied, on purpose: the app's resource limits and seccomp filter
# (the command runs in a unit of its own, as `rkt enter` ran outside the app's limits), its command,
# output and Type= (the command's own), and ExecStartPre=/ExecStopPost= (the app's event handlers).
# Each with its D-Bus signature (org.freedesktop.systemd1(5), systemd 252): pystemd encodes a transient
# unit's settings from a table of its own, and Debian 12's lacks some (a boot refused the command with
# KeyError: b'ProtectKernelLogs'), so the missing ones are added to it (UnitCommand).
SIGNATURES = {"RootDirectory": b"s", "User": b"s", "Group": b"s", "SupplementaryGroups": b"as",
              "WorkingDirectory": b"s", "Environment": b"as", "MountAPIVFS": b"b", "PrivateDevices": b"b",
              "PrivateTmp": b"b", "ProtectKernelTunables": b"b", "ProtectKernelModules": b"b",
              "ProtectKernelLogs": b"b", "ProtectControlGroups": b"b", "InaccessiblePaths": b"as",
              "ReadOnlyPaths": b"as", "ReadWritePaths": b"as", "BindPaths": b"a(ssbt)",
              "BindReadOnlyPaths": b"a(ssbt)", "CapabilityBoundingSet": b"t", "NoNewPrivileges": b"b",
              "JoinsNamespaceOf": b"as"}
COPIED = tuple(name for name in SIGNATURES if name != "JoinsNamespaceOf")
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
    return command_settings(app, {name: getattr(unit.Service, name) for name in COPIED})


def command_settings(app: str, service: dict[str, object]) -> dict[bytes, object]:
    """The transient unit's settings from the app unit's `service` properties (COPIED, as read)."""
    settings: dict[bytes, object] = {}
    for name in COPIED:
        value = service.get(name)
        if value in (b"", [], None):
            continue
        settings[name.encode()] = value
    if settings.get(b"PrivateTmp"):
        settings[b"JoinsNamespaceOf"] = [f"{app}.service".encode()]
    return settings


class UnitCommand:
    """The command as a transient service of the guest's systemd (pystemd.run, RemainAfterExit=yes)."""

    def __init__(self, name: bytes, words: list[bytes], settings: dict[bytes, object], *, stdin: int | None = None,
                 stdout: int | None = None, stderr: int | None = None, pty_path: bytes | None = None):
        import pystemd.run
        from pystemd.systemd1.unit_signatures import KNOWN_UNIT_SIGNATURES

        for key, signature in SIGNATURES.items():
            KNOWN_UNIT_SIGNATURES.setdefault(key.encode(), signature)
        self.name = name
        if pty_path is not None:
            self.unit = pystemd.run(words, name=name, pty_path=pty_path, remain_after_exit=True, user_mode=False,
                                    extra=settings)
        else:
            self.unit = pystemd.run(words, name=name, stdin=stdin, stdout=stdout, stderr=stderr,
                                    remain_after_exit=True, user_mode=False, extra=settings)

    def kill(self, signum: int) -> None:
        self.unit.Unit.Kill(b"main", signum)

    def status(self) -> int | None:
        """None while the command runs; then its exit status, 128+N for a signal."""
        service = self.unit.Service
        if int(service.MainPID) != 0 or _text(self.unit.Unit.SubState) not in ("exited", "failed", "dead"):
            return None
        code, status = int(service.ExecMainCode), int(service.ExecMainStatus)
        return 128 + status if code in _CODES_KILLED else status

    def stop(self) -> None:
        from pystemd.systemd1 import Manager

        with Manager() as manager:
            for call in (lambda: manager.Manager.StopUnit(self.name, b"replace"),
                         lambda: manager.Manager.ResetFailedUnit(self.name)):
                try:
                    call()
                except Exception:
                    pass


class Session:
    def __init__(self, server: "Server", channel: int, request: dict):
        self.server = server
        self.channel = channel
        self.unit_name = f"kvmpod-enter-{request['app']}-{channel}-{os.getpid()}.service".encode()
        self.command = None
        self.status: int | None = None
        self.stdin_fd = self.master = self.slave = None
        self.outputs: dict[int, int] = {}  # fd -> STDOUT/STDERR
        self.pending = bytearray()
        self.stdin_eof = False
        self.start(request)

    def start(self, request: dict) -> None:
        settings = self.server.app_settings(request["app"])
        root = _text(settings.get(b"RootDirectory", b"/"))
        argv = request["argv"] or [DEFAULT_COMMAND]
        words = exec_argv(resolve_command(root, argv[0]), argv)
        if request["tty"] and request["term"]:
            settings[b"Environment"] = list(settings.get(b"Environment", [])) + [b"TERM=" + request["term"].encode()]
        if request["tty"]:
            self.master, self.slave = os.openpty()
            if request["rows"] and request["cols"]:
                self.resize(request["rows"], request["cols"])
            os.set_blocking(self.master, False)
            self.command = self.server.start_command(self.unit_name, words, settings,
                                                     pty_path=os.ttyname(self.slave).encode())
            self.stdin_fd = self.master
            self.outputs[self.master] = p.STDOUT
        else:
            child_in, self.stdin_fd = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            try:
                self.command = self.server.start_command(self.unit_name, words, settings, stdin=child_in,
                                                         stdout=out_w, stderr=err_w)
            except BaseException:
                for fd in (self.stdin_fd, out_r, err_r):
                    os.close(fd)
                self.stdin_fd = None
                raise
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
        if self.command is not None and 0 < signum < 65:
            try:
                self.command.kill(signum)
            except Exception:
                pass

    # ------------------------------------------------------------ what the selector watches

    def _watch(self, fd: int) -> None:
        """Watch fd for what it is for now: output to read, stdin waiting to be written."""
        events = (selectors.EVENT_READ if fd in self.outputs else 0) | \
            (selectors.EVENT_WRITE if fd == self.stdin_fd and self.pending else 0)
        registered = fd in self.server.selector.get_map()
        if events and registered:
            self.server.selector.modify(fd, events, (self, fd))
        elif events:
            self.server.selector.register(fd, events, (self, fd))
        elif registered:
            self.server.selector.unregister(fd)

    def _forget(self, fd: int) -> None:
        if fd in self.server.selector.get_map():
            self.server.selector.unregister(fd)

    def ready(self, fd: int, events: int) -> None:
        if events & selectors.EVENT_WRITE and fd == self.stdin_fd:
            self.flush_stdin()
        if events & selectors.EVENT_READ and fd in self.outputs:
            self.read_output(fd)

    # ------------------------------------------------------------ stdin

    def feed_stdin(self, data: bytes) -> None:
        if self.stdin_fd is None or self.stdin_eof:
            return
        if len(self.pending) + len(data) > MAX_PENDING_STDIN:
            raise p.ProtocolError("stdin beyond the window")  # the host keeps to STDIN_WINDOW
        self.pending += data
        self.flush_stdin()

    def flush_stdin(self) -> None:
        fd = self.stdin_fd
        written = 0
        while self.pending and fd is not None:
            try:
                n = os.write(fd, self.pending[:p.MAX_PAYLOAD])
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
        if fd is None:
            return
        if not self.pending and self.stdin_eof and self.master is None:
            self._forget(fd)
            os.close(fd)
            self.stdin_fd = None
        else:
            self._watch(fd)

    def end_stdin(self) -> None:
        self.stdin_eof = True
        if self.master is None:
            self.flush_stdin()

    # ------------------------------------------------------------ output and the end

    def read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, p.MAX_PAYLOAD)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's last user closed it
            data = b""
        if data:
            self.server.send(self.channel, self.outputs[fd], data)
            return
        del self.outputs[fd]
        if fd == self.master:
            self._watch(fd)  # kept open (it is stdin too) but no longer read: EIO would repeat
        else:
            self._forget(fd)
            os.close(fd)

    def poll_end(self) -> bool:
        """True when the command has ended and its status is known."""
        if self.status is None and self.command is not None:
            self.status = self.command.status()
        return self.status is not None

    def finish(self, send_exit: bool) -> None:
        """Stop the unit (ending what the command left running), pass on what it wrote, send EXIT.
        Never blocks: the unit keeps a copy of the pipes' write ends until systemd unloads it, so the
        output is read until it has been quiet for DRAIN_QUIET_SECONDS (at most DRAIN_SECONDS)."""
        if self.command is not None:
            try:
                self.command.stop()
            except Exception:
                pass
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
                del self.outputs[fd]
        for fd in {self.master, self.slave, self.stdin_fd, *self.outputs} - {None}:
            self._forget(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        self.outputs.clear()
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

    # What a session needs from systemd; a test gives processes of its own instead.
    def app_settings(self, app: str) -> dict[bytes, object]:
        return app_settings(app)

    def start_command(self, name: bytes, words: list[bytes], settings: dict[bytes, object], **stdio):
        return UnitCommand(name, words, settings, **stdio)

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
            for key, events in self.selector.select(timeout):
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
                    if self.sessions.get(session.channel) is session:
                        session.ready(fd, events)
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + STATE_POLL_SECONDS
                for channel, session in list(self.sessions.items()):
                    if session.poll_end():
                        del self.sessions[channel]
                        session.finish(send_exit=True)


def main(server: type[Server] = Server) -> int:
    # A command that closes its stdin must not end every session: a write to its pipe is EPIPE, not SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        return server(0).run()
    except p.ProtocolError as error:
        sys.stderr.write(f"kvmpod-enter: the host sent a malformed frame: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
