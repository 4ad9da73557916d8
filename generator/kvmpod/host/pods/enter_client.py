"""`kvmpod enter UUID [--app NAME] [-- CMD ARGS...]`: a command in an app's environment in a running pod.

It connects to the relay `kvmpod run` keeps for the pod (host.pods.enter_relay, a socket in
/run/kvmpod, root's only), asks for the command (default /bin/sh from the app's image) and passes
bytes both ways: with stdin a terminal, the terminal in raw mode (restored on exit) and its size
(again on SIGWINCH); otherwise stdin, stdout and stderr as byte streams, stdin sent within the
guest's window (STDIN_ACK), SIGINT/SIGTERM/SIGHUP passed to the command. Exits with the command's
status (128+N for a signal).
"""

import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time
import tty

from ...guest import enter_protocol as p
from ...pod.problems import InvalidInput, Problem
from .pod_dirs import PodDir, is_running, manifest_apps, pod_state, read_state

EXIT_LOST = 255  # the connection ended before the command's status came (as ssh does)
ANSWER_ENV = "KVMPOD_ENTER_WAIT"  # seconds to wait for the guest's first answer
ANSWER_SECONDS = 300.0  # a TCG guest under load starts its server (Python, pystemd) slowly


def answer_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(ANSWER_ENV, ANSWER_SECONDS)))
    except ValueError:
        return ANSWER_SECONDS
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check_pod(pod: PodDir, app: str | None) -> str:
    """The app to enter, after the checks that need no connection; InvalidInput otherwise."""
    uuid = pod.uuid
    if not os.path.isdir(pod.path):
        raise InvalidInput([Problem("UUID", f"no pod {uuid} in {os.path.dirname(pod.path)}; see kvmpod list")])
    if not is_running(pod):
        raise InvalidInput([Problem("UUID", f"pod {uuid} is not running ({pod_state(pod)}); kvmpod enter needs "
                                            f"a running pod (its output: kvmpod logs {uuid})")])
    state = read_state(pod)
    apps = state.get("apps") or manifest_apps(pod)
    if app is None:
        if len(apps) != 1:
            raise InvalidInput([Problem("--app", f"pod {uuid} has {len(apps)} apps ({', '.join(apps)}); "
                                                 f"name one with --app NAME")])
        app = apps[0]
    elif app not in apps:
        raise InvalidInput([Problem("--app", f"{app!r} is not an app of pod {uuid} (its apps: {', '.join(apps)})")])
    if not state.get("enter"):
        why = ("it runs under lkvm, whose only virtio console carries the guest console (lkvm has no "
               "virtio-serial port on a host socket)" if "lkvm" in str(state.get("hypervisor", ""))
               else "it was booted without the enter port (by a kvmpod without `kvmpod enter`, or not by kvmpod run)")
        raise InvalidInput([Problem("UUID", f"pod {uuid} has no enter channel: {why}")])
    return app


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return 0, 0


def enter(pod: PodDir, app: str, argv: list[str], stdin: int = 0, stdout: int = 1, stderr: int = 2) -> int:
    """Run argv (empty: the default shell) in app; the command's exit status."""
    use_tty = os.isatty(stdin)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(pod.enter_socket)
    except OSError as error:
        sock.close()
        raise RuntimeError(f"cannot reach pod {pod.uuid}'s enter relay at {pod.enter_socket}: {error.strerror}; "
                           f"its kvmpod run may be ending") from None
    rows, cols = _terminal_size(stdin if use_tty else stdout) if use_tty else (0, 0)
    sock.sendall(p.frame(0, p.OPEN, p.open_request(app, argv, use_tty, rows, cols, os.environ.get("TERM", ""))))
    saved = termios.tcgetattr(stdin) if use_tty else None
    received: list[int] = []
    previous = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def note(signum: int, _frame: object) -> None:
        received.append(signum)
        try:
            os.write(wake_w, b"x")
        except OSError:
            pass

    for signum in (signal.SIGWINCH,) if use_tty else FORWARDED:
        previous[signum] = signal.signal(signum, note)
    selector = selectors.DefaultSelector()
    try:
        if use_tty:
            tty.setraw(stdin)
        selector.register(sock, selectors.EVENT_READ, "sock")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        stdin_open = True
        try:
            selector.register(stdin, selectors.EVENT_READ, "stdin")
            stdin_file = False
        except PermissionError:  # a regular file or /dev/null: epoll cannot watch it, it is always ready
            stdin_file = True
        in_flight = 0
        reader = p.FrameReader(p.TO_HOST)
        answered, answer_by = False, time.monotonic() + answer_seconds()
        while True:
            waiting = None if answered else max(0.0, answer_by - time.monotonic())
            events = selector.select(0 if stdin_file and stdin_open and in_flight < p.STDIN_WINDOW else waiting)
            if not answered and not events and time.monotonic() >= answer_by:
                sys.stderr.write(f"kvmpod: enter: pod {pod.uuid} did not answer within {answer_seconds():.0f} s: "
                                 f"its guest has no kvmpod-enter@.socket listening (an older stage1?), or is still "
                                 f"booting; {ANSWER_ENV} sets the wait\r\n")
                return EXIT_LOST
            if stdin_file and stdin_open and in_flight < p.STDIN_WINDOW:
                data = os.read(stdin, p.MAX_PAYLOAD)
                sock.sendall(p.frame(0, p.STDIN, data) if data else p.frame(0, p.STDIN_EOF))
                in_flight += len(data)
                stdin_open = bool(data)
            for key, _ in events:
                if key.data == "wake":
                    os.read(wake_r, 64)
                    while received:
                        signum = received.pop(0)
                        if signum == signal.SIGWINCH:
                            sock.sendall(p.frame(0, p.RESIZE, p.pack_size(*_terminal_size(stdin))))
                        else:
                            sock.sendall(p.frame(0, p.SIGNAL, bytes([signum])))
                elif key.data == "stdin":
                    data = os.read(stdin, p.MAX_PAYLOAD)
                    if data:
                        sock.sendall(p.frame(0, p.STDIN, data))
                        in_flight += len(data)
                    else:
                        sock.sendall(p.frame(0, p.STDIN_EOF))
                    if not data or in_flight >= p.STDIN_WINDOW:
                        selector.unregister(stdin)
                        stdin_open = bool(data)
                else:
                    data = sock.recv(p.MAX_PAYLOAD + p.HEADER.size)
                    if not data:
                        sys.stderr.write(f"kvmpod: enter: the connection to pod {pod.uuid} ended before the "
                                         f"command did\r\n")
                        return EXIT_LOST
                    try:
                        messages = reader.feed(data)
                    except p.ProtocolError as error:
                        sys.stderr.write(f"kvmpod: enter: malformed reply from pod {pod.uuid}: {error}\r\n")
                        return EXIT_LOST
                    answered = answered or bool(messages)
                    for _, kind, payload in messages:
                        if kind == p.STDOUT:
                            _write_all(stdout, payload)
                        elif kind == p.STDERR:
                            _write_all(stderr, payload)
                        elif kind == p.STDIN_ACK:
                            in_flight = max(0, in_flight - p.unpack_count(payload))
                            if (stdin_open and not stdin_file and in_flight < p.STDIN_WINDOW
                                    and stdin not in _registered(selector)):
                                selector.register(stdin, selectors.EVENT_READ, "stdin")
                        elif kind == p.EXIT:
                            return p.unpack_status(payload)
                        elif kind == p.ERROR:
                            text = payload.decode("utf-8", "replace")
                            sys.stderr.write(("" if text.startswith("kvmpod") else "kvmpod: enter: ") + text + "\r\n")
                            return 2
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        selector.close()
        sock.close()
        os.close(wake_r)
        os.close(wake_w)


def _registered(selector: selectors.BaseSelector) -> set:
    return {key.fd for key in selector.get_map().values()}


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BrokenPipeError:
            return
        data = data[n:]
