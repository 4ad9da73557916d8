"""kvmpod enter's framing (guest.enter_protocol): frames in, frames out, and what a reader refuses."""

import json

import pytest

from kvmpod.guest import enter_protocol as p


def test_frames_round_trip_in_any_pieces():
    data = (p.frame(7, p.STDOUT, b"hello") + p.frame(9, p.EXIT, p.pack_status(-3))
            + p.frames(7, p.STDERR, b"x" * (p.MAX_PAYLOAD + 10)))
    reader = p.FrameReader(p.TO_HOST)
    got = []
    for i in range(0, len(data), 3):  # three bytes at a time: frames split anywhere
        got += reader.feed(data[i:i + 3])
    assert got[0] == (7, p.STDOUT, b"hello")
    assert got[1][:2] == (9, p.EXIT) and p.unpack_status(got[1][2]) == -3
    assert [(c, k, len(b)) for c, k, b in got[2:]] == [(7, p.STDERR, p.MAX_PAYLOAD), (7, p.STDERR, 10)]
    assert reader.buffer == b""


def test_a_reader_refuses_an_oversized_frame_before_reading_it():
    reader = p.FrameReader(p.TO_HOST)
    with pytest.raises(p.ProtocolError, match="at most"):
        reader.feed(p.HEADER.pack(1, p.STDOUT, p.MAX_PAYLOAD + 1))  # the header alone: nothing buffered


@pytest.mark.parametrize("kind", [0, 99, p.OPEN, p.STDIN])  # host-bound readers refuse guest-bound kinds
def test_a_reader_refuses_kinds_it_does_not_take(kind):
    with pytest.raises(p.ProtocolError, match="unknown frame kind"):
        p.FrameReader(p.TO_HOST).feed(p.HEADER.pack(1, kind, 0))


def test_fixed_size_kinds_must_have_their_size():
    with pytest.raises(p.ProtocolError, match="kind 19 with 3 bytes"):
        p.FrameReader(p.TO_HOST).feed(p.HEADER.pack(1, p.EXIT, 3) + b"abc")


def test_frame_refuses_a_payload_over_the_limit():
    with pytest.raises(ValueError):
        p.frame(1, p.STDIN, b"x" * (p.MAX_PAYLOAD + 1))


def test_open_requests():
    request = p.parse_open(p.open_request("web", ["sh", "-c", "echo"], True, 24, 80, "xterm"))
    assert request == {"app": "web", "argv": ["sh", "-c", "echo"], "tty": True, "rows": 24, "cols": 80,
                       "term": "xterm"}
    for bad in (b"not json", json.dumps({"argv": []}).encode(), json.dumps({"app": "a", "argv": "sh"}).encode(),
                json.dumps({"app": "a", "argv": ["a\0b"]}).encode(),
                json.dumps({"app": "a", "argv": [], "rows": 70000}).encode()):
        with pytest.raises(p.ProtocolError):
            p.parse_open(bad)


def test_sizes_are_clamped():
    assert p.unpack_size(p.pack_size(-1, 100000)) == (0, 65535)


def test_the_guest_server_doubles_dollars_in_arguments_only_and_finds_commands_in_the_app(tmp_path):
    from kvmpod.guest import enter_server as s

    assert s.exec_argv("/bin/sh", ["sh", "-c", "kill $$; echo ${FOO}"]) == [b"/bin/sh", b"-c", b"kill $$$$; echo $${FOO}"]
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin/sh").symlink_to("busybox")  # a dangling link in the host's view still counts
    assert s.resolve_command(str(root), "/bin/sh") == "/bin/sh"
    assert s.resolve_command(str(root), "sh") == "/bin/sh"
    for bad, message in (("/bin/bash", "/bin/bash is not in the app's image"), ("bash", "not on the PATH"),
                         ("bin/sh", "give an absolute path")):
        with pytest.raises(s.SessionError, match=message):
            s.resolve_command(str(root), bad)
