"""kvmpod run's enter relay (host.pods.enter_relay) against a stand-in for QEMU's port: channels,
renumbering, and what an untrusted guest or a client that does not read cannot do to it."""

import os
import socket
import tempfile
import threading
import time

import pytest

from kvmpod.guest import enter_protocol as p
from kvmpod.host.pods import enter_relay as r


@pytest.fixture
def relay():
    run = tempfile.mkdtemp(prefix="kr-")  # short: socket paths must fit 108 bytes
    port_path, client_path = os.path.join(run, "port"), os.path.join(run, "enter")
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.bind(port_path)
    qemu.listen(1)
    relay = r.EnterRelay(port_path, client_path)
    relay.start()
    guest, _ = qemu.accept()
    guest.settimeout(10)
    deadline = time.monotonic() + 10
    while not os.path.exists(client_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield relay, guest, client_path
    relay.stop()
    relay.join(5)
    guest.close()
    qemu.close()


def client(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def read_frames(sock: socket.socket, accepted, count: int) -> list[tuple[int, int, bytes]]:
    reader, got = p.FrameReader(accepted), []
    while len(got) < count:
        data = sock.recv(65536)
        if not data:
            break
        got += reader.feed(data)
    return got


def test_two_clients_get_their_own_channels(relay):
    _, guest, path = relay
    a, b = client(path), client(path)
    a.sendall(p.frame(0, p.OPEN, p.open_request("app", ["true"], False)))
    opened = read_frames(guest, p.TO_GUEST, 1)
    b.sendall(p.frame(0, p.OPEN, p.open_request("app", ["false"], False)) + p.frame(0, p.STDIN, b"in"))
    opened += read_frames(guest, p.TO_GUEST, 2)
    (ca, _, _), (cb, kind, _), (cb2, kind2, data) = opened
    assert ca != cb == cb2 and (kind, kind2, data) == (p.OPEN, p.STDIN, b"in")
    guest.sendall(p.frame(cb, p.STDOUT, b"to b") + p.frame(ca, p.EXIT, p.pack_status(0))
                  + p.frame(cb, p.EXIT, p.pack_status(1)))
    assert read_frames(a, p.TO_HOST, 1) == [(0, p.EXIT, p.pack_status(0))]
    assert read_frames(b, p.TO_HOST, 2) == [(0, p.STDOUT, b"to b"), (0, p.EXIT, p.pack_status(1))]


def test_a_client_that_goes_away_has_its_command_stopped(relay):
    _, guest, path = relay
    a = client(path)
    a.sendall(p.frame(0, p.OPEN, p.open_request("app", [], False)))
    (channel, _, _), = read_frames(guest, p.TO_GUEST, 1)
    a.close()
    assert read_frames(guest, p.TO_GUEST, 1) == [(channel, p.CLOSE, b"")]


def test_frames_before_open_are_not_passed_on(relay):
    _, guest, path = relay
    a = client(path)
    a.sendall(p.frame(0, p.STDIN, b"early") + p.frame(0, p.OPEN, p.open_request("app", [], False)))
    assert [k for _, k, _ in read_frames(guest, p.TO_GUEST, 1)] == [p.OPEN]


def test_a_malformed_guest_frame_ends_enter_for_the_pod_with_a_reason(relay):
    relay_thread, guest, path = relay
    a = client(path)
    a.sendall(p.frame(0, p.OPEN, p.open_request("app", [], False)))
    read_frames(guest, p.TO_GUEST, 1)
    guest.sendall(p.HEADER.pack(1, p.STDOUT, 1 << 30))  # a length no frame may have
    (_, kind, text), = read_frames(a, p.TO_HOST, 1)
    assert kind == p.ERROR and b"malformed frame" in text
    relay_thread.join(5)
    assert not relay_thread.is_alive() and not os.path.exists(path)


def test_a_client_that_does_not_read_is_dropped_not_waited_for(relay, monkeypatch):
    monkeypatch.setattr(r, "CLIENT_QUEUE_BYTES", 256 * 1024)
    _, guest, path = relay
    slow, quick = client(path), client(path)
    slow.sendall(p.frame(0, p.OPEN, p.open_request("app", [], False)))
    quick.sendall(p.frame(0, p.OPEN, p.open_request("app", [], False)))
    (c1, _, _), (c2, _, _) = read_frames(guest, p.TO_GUEST, 2)
    slow_channel = c1 if c1 < c2 else c2
    quick_channel = c2 if c1 < c2 else c1
    sender = threading.Thread(target=lambda: guest.sendall(p.frames(slow_channel, p.STDOUT, b"z" * (8 << 20))))
    sender.start()
    sender.join(30)
    assert not sender.is_alive(), "the relay stopped reading the guest"
    assert (slow_channel, p.CLOSE, b"") in read_frames(guest, p.TO_GUEST, 1)
    guest.sendall(p.frame(quick_channel, p.EXIT, p.pack_status(5)))
    assert read_frames(quick, p.TO_HOST, 1) == [(0, p.EXIT, p.pack_status(5))]


def test_a_guest_that_does_not_read_its_input_still_gets_its_output_read(relay):
    """Both ways at once (a `cat` of a big stdin): the relay never blocks on the port's input side,
    so the guest's output keeps flowing while the guest is not reading."""
    _, guest, path = relay
    a = client(path)
    a.sendall(p.frame(0, p.OPEN, p.open_request("app", ["cat"], False)))
    (channel, _, _), = read_frames(guest, p.TO_GUEST, 1)
    a.sendall(p.frames(0, p.STDIN, b"i" * p.STDIN_WINDOW))  # the guest does not read it (yet)
    sender = threading.Thread(target=lambda: guest.sendall(p.frames(channel, p.STDOUT, b"o" * (2 << 20))
                                                           + p.frame(channel, p.EXIT, p.pack_status(0))))
    sender.start()
    got, reader = 0, p.FrameReader(p.TO_HOST)
    while True:
        frames = reader.feed(a.recv(1 << 16))
        got += sum(len(d) for _, k, d in frames if k == p.STDOUT)
        if any(k == p.EXIT for _, k, _ in frames):
            break
    sender.join(10)
    assert got == 2 << 20 and not sender.is_alive()
    stdin = read_frames(guest, p.TO_GUEST, p.STDIN_WINDOW // p.MAX_PAYLOAD)
    assert sum(len(d) for _, k, d in stdin if k == p.STDIN) == p.STDIN_WINDOW
