"""`kvmpod run`'s side of `kvmpod enter`: one thread that holds the pod's enter port and multiplexes
the `kvmpod enter` clients over it.

QEMU serves the port (`virtserialport` name kvmpod.enter) on a UNIX socket, PodDir.enter_port. The
relay connects to it as soon as QEMU made it and stays connected for the pod's life: the guest's
port then counts as open on the host side, so the guest's socket unit waits for data instead of
seeing a hang-up (a virtio port with no host connection polls as EPOLLHUP and reads as EOF). It
listens on PodDir.enter_socket (in /run/kvmpod, 0700, root's) for `kvmpod enter`, gives each client
a channel number, and passes frames both ways (kvmpod.guest.enter_protocol), rewriting the channel.

The guest is untrusted: its frames are read through a FrameReader (one frame of at most 64 KiB held),
a malformed one ends the relay (every client is told why; the pod runs on), and what is queued for
a client that does not read is bounded (CLIENT_QUEUE_BYTES): past it the client is dropped and the
guest told to stop its command.
"""

import os
import selectors
import socket
import threading
import time

from ...guest import enter_protocol as p

CLIENT_QUEUE_BYTES = 4 * 1024 * 1024
CONNECT_RETRY_SECONDS = 0.01
MAX_CLIENTS = 64
PORT_QUEUE_BYTES = MAX_CLIENTS * (p.STDIN_WINDOW + 2 * (p.MAX_PAYLOAD + p.HEADER.size))


class _Client:
    def __init__(self, sock: socket.socket, channel: int):
        self.sock = sock
        self.channel = channel
        self.reader = p.FrameReader(p.TO_GUEST)
        self.queue = bytearray()
        self.opened = False


class EnterRelay(threading.Thread):
    def __init__(self, port_path: str, socket_path: str, stopping: threading.Event | None = None):
        super().__init__(name="kvmpod-enter-relay", daemon=True)
        self.port_path = port_path
        self.socket_path = socket_path
        self.stopping = stopping or threading.Event()
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.next_channel = 1
        self.port: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.broken: str | None = None
        self.port_queue = bytearray()

    # ------------------------------------------------------------ setup and teardown

    def _connect_port(self) -> bool:
        while not self.stopping.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.port_path)
            except OSError:
                sock.close()
                time.sleep(CONNECT_RETRY_SECONDS)
                continue
            sock.setblocking(False)
            self.port = sock
            return True
        return False

    def _listen(self) -> None:
        for path in (self.socket_path, self.socket_path + ".new"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:  # listening before it has its name: a client never finds it there but refusing
            listener.bind(self.socket_path + ".new")
        finally:
            os.umask(old)
        listener.listen(16)
        os.rename(self.socket_path + ".new", self.socket_path)
        listener.setblocking(False)
        self.listener = listener

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            if not self._connect_port():
                return
            self._listen()
            self.selector.register(self.port, selectors.EVENT_READ, "port")
            self.selector.register(self.listener, selectors.EVENT_READ, "listen")
            while not self.stopping.is_set():
                for key, events in self.selector.select(0.2):
                    if key.data == "port":
                        if events & selectors.EVENT_WRITE:
                            self._flush_port()
                        if events & selectors.EVENT_READ and self.port is not None:
                            self._from_guest()
                    elif key.data == "listen":
                        self._accept()
                    else:
                        self._client_event(key.data, events)
                    if self.port is None:
                        break
                if self.port is None:
                    break
        finally:
            for client in list(self.clients.values()):
                self._drop(client, tell_guest=False, last=f"kvmpod: {self.broken or 'the pod ended'}")
            for sock in (self.listener, self.port):
                if sock is not None:
                    sock.close()
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass

    # ------------------------------------------------------------ clients

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        if len(self.clients) >= MAX_CLIENTS:
            sock.sendall(p.frame(0, p.ERROR, f"more than {MAX_CLIENTS} enters at once".encode()))
            sock.close()
            return
        sock.setblocking(False)
        channel = self.next_channel
        self.next_channel = self.next_channel % 0xFFFFFFFF + 1
        client = _Client(sock, channel)
        self.clients[channel] = client
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _client_event(self, client: _Client, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush(client)
        if not events & selectors.EVENT_READ or client.channel not in self.clients:
            return
        try:
            data = client.sock.recv(p.MAX_PAYLOAD + p.HEADER.size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client, tell_guest=True)
            return
        try:
            messages = client.reader.feed(data)
        except p.ProtocolError:
            self._drop(client, tell_guest=True)
            return
        for _, kind, payload in messages:
            if kind == p.OPEN:
                if client.opened:
                    continue
                client.opened = True
            elif not client.opened:
                continue
            self._to_guest(p.frame(client.channel, kind, payload))

    def _to_guest(self, data: bytes) -> None:
        """Queued and sent as the port takes it: a blocking send could wait on a guest that is itself
        waiting for us to read its output. Each client keeps to its stdin window, so the queue is
        bounded by the clients' windows; past PORT_QUEUE_BYTES something is wrong and enter ends."""
        if self.port is None:
            return
        self.port_queue += data
        if len(self.port_queue) > PORT_QUEUE_BYTES:
            self._break("more than the clients' windows waited for the guest's enter port")
            return
        self._flush_port()

    def _flush_port(self) -> None:
        while self.port is not None and self.port_queue:
            try:
                n = self.port.send(self.port_queue)
            except BlockingIOError:
                break
            except OSError:
                self._break("the pod's enter port closed")
                return
            del self.port_queue[:n]
        if self.port is not None:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.port_queue else 0)
            try:
                self.selector.modify(self.port, wanted, "port")
            except (KeyError, ValueError):
                pass

    def _queue(self, client: _Client, data: bytes) -> None:
        client.queue += data
        if len(client.queue) > CLIENT_QUEUE_BYTES:
            self._drop(client, tell_guest=True)  # it does not read: it loses its command, nobody else stalls
            return
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        while client.queue:
            try:
                n = client.sock.send(client.queue)
            except BlockingIOError:
                break
            except OSError:
                self._drop(client, tell_guest=True)
                return
            del client.queue[:n]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.queue else 0)
        try:
            self.selector.modify(client.sock, wanted, client)
        except (KeyError, ValueError):
            pass

    def _drop(self, client: _Client, tell_guest: bool, last: str | None = None) -> None:
        if self.clients.pop(client.channel, None) is None:
            return
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        if last is not None:
            try:
                client.sock.setblocking(True)
                client.sock.settimeout(1.0)
                client.sock.sendall(bytes(client.queue) + p.frame(0, p.ERROR, last.encode()[:p.MAX_PAYLOAD]))
            except OSError:
                pass
        client.sock.close()
        if tell_guest and client.opened:
            self._to_guest(p.frame(client.channel, p.CLOSE))

    # ------------------------------------------------------------ the guest

    def _break(self, why: str) -> None:
        self.broken = why
        if self.port is not None:
            try:
                self.selector.unregister(self.port)
            except (KeyError, ValueError):
                pass
            self.port.close()
            self.port = None

    def _from_guest(self) -> None:
        try:
            data = self.port.recv(p.MAX_PAYLOAD + p.HEADER.size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._break("the pod's enter port closed")
            return
        if not hasattr(self, "_guest_reader"):
            self._guest_reader = p.FrameReader(p.TO_HOST)
        try:
            messages = self._guest_reader.feed(data)
        except p.ProtocolError as error:
            self._break(f"the guest sent a malformed frame on the enter port ({error}); enter is off for this pod")
            return
        for channel, kind, payload in messages:
            client = self.clients.get(channel)
            if client is not None:
                self._queue(client, p.frame(0, kind, payload))
