"""The framed protocol of `kvmpod enter`, spoken over one virtio-serial port (kvmpod.enter) between
`kvmpod run` on the host and kvmpod.guest.enter_server in the guest, and over a UNIX socket between
`kvmpod enter` and `kvmpod run` (which renumbers the channels: one per `kvmpod enter`).

A frame: channel (u32), kind (u8), length (u32), all big-endian, then `length` bytes of payload, at
most MAX_PAYLOAD. A reader holds at most one frame: a bigger length or an unknown kind is a
ProtocolError, and the side that reads it drops the connection (the guest is untrusted).

Host -> guest: OPEN (JSON: app, argv, tty, rows, cols, term), STDIN (bytes), STDIN_EOF, RESIZE
(rows u16, cols u16), SIGNAL (u8), CLOSE (the client went away: stop the command).
Guest -> host: STDOUT, STDERR (bytes), STDIN_ACK (u32: stdin bytes the command took, so a client
never has more than STDIN_WINDOW bytes in flight), EXIT (i32: the status, 128+N for a signal),
ERROR (UTF-8 text: the session could not start; it ends the channel), STARTED (the command's unit
was started: a client that hears nothing at all says the guest's side is missing).
"""

import json
import struct

HEADER = struct.Struct(">IBI")
MAX_PAYLOAD = 64 * 1024
STDIN_WINDOW = 256 * 1024
PORT_NAME = "kvmpod.enter"

OPEN, STDIN, STDIN_EOF, RESIZE, SIGNAL, CLOSE = 1, 2, 3, 4, 5, 6
STDOUT, STDERR, STDIN_ACK, EXIT, ERROR, STARTED = 16, 17, 18, 19, 20, 21
TO_GUEST = frozenset({OPEN, STDIN, STDIN_EOF, RESIZE, SIGNAL, CLOSE})
TO_HOST = frozenset({STDOUT, STDERR, STDIN_ACK, EXIT, ERROR, STARTED})
_FIXED = {STDIN_EOF: 0, CLOSE: 0, RESIZE: 4, SIGNAL: 1, STDIN_ACK: 4, EXIT: 4, STARTED: 0}


class ProtocolError(ValueError):
    pass


def frame(channel: int, kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    return HEADER.pack(channel, kind, len(payload)) + payload


def frames(channel: int, kind: int, data: bytes) -> bytes:
    """`data` as as many frames of `kind` as it takes."""
    return b"".join(frame(channel, kind, data[i:i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD))


class FrameReader:
    """Bytes in, (channel, kind, payload) out; never holds more than one frame's bytes."""

    def __init__(self, accepted: frozenset[int]):
        self.accepted = accepted
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= HEADER.size:
            channel, kind, length = HEADER.unpack_from(self.buffer)
            if kind not in self.accepted:
                raise ProtocolError(f"unknown frame kind {kind}")
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"a frame of {length} bytes (at most {MAX_PAYLOAD})")
            if kind in _FIXED and length != _FIXED[kind]:
                raise ProtocolError(f"a frame of kind {kind} with {length} bytes (it has {_FIXED[kind]})")
            if len(self.buffer) < HEADER.size + length:
                break
            payload = bytes(self.buffer[HEADER.size:HEADER.size + length])
            del self.buffer[:HEADER.size + length]
            out.append((channel, kind, payload))
        return out


def open_request(app: str, argv: list[str], tty: bool, rows: int = 0, cols: int = 0, term: str = "") -> bytes:
    return json.dumps({"app": app, "argv": argv, "tty": tty, "rows": rows, "cols": cols, "term": term}).encode()


def parse_open(payload: bytes) -> dict:
    try:
        request = json.loads(payload)
    except ValueError:
        raise ProtocolError("OPEN: not JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("app"), str) or not request["app"]:
        raise ProtocolError("OPEN: no app")
    argv = request.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise ProtocolError("OPEN: argv is not a list of strings")
    for key in ("rows", "cols"):
        if not isinstance(request.get(key, 0), int) or not 0 <= request.get(key, 0) <= 65535:
            raise ProtocolError(f"OPEN: {key}")
    if not isinstance(request.get("term", ""), str):
        raise ProtocolError("OPEN: term")
    return {"app": request["app"], "argv": argv, "tty": bool(request.get("tty")), "rows": request.get("rows", 0),
            "cols": request.get("cols", 0), "term": request.get("term", "")}


def pack_size(rows: int, cols: int) -> bytes:
    return struct.pack(">HH", max(0, min(rows, 65535)), max(0, min(cols, 65535)))


def unpack_size(payload: bytes) -> tuple[int, int]:
    return struct.unpack(">HH", payload)


def pack_status(status: int) -> bytes:
    return struct.pack(">i", status)


def unpack_status(payload: bytes) -> int:
    return struct.unpack(">i", payload)[0]


def pack_count(count: int) -> bytes:
    return struct.pack(">I", count)


def unpack_count(payload: bytes) -> int:
    return struct.unpack(">I", payload)[0]
