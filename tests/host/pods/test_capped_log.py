"""The pod's logs stay within their cap (host.pods.capped_log), and the lines shown are bounded."""

import os
import socket

import pytest

from kvmpod.host.pods import capped_log as c


def test_a_log_rotates_at_its_cap_and_keeps_the_newest(tmp_path):
    path = tmp_path / "apps.log"
    log = c.CappedLog(str(path), cap=100)
    for i in range(50):
        log.write(f"line {i:03d}\n".encode())  # 9 bytes each, 450 in all
    log.close()
    assert path.stat().st_size <= 100 and (tmp_path / "apps.log.1").stat().st_size == 100
    newest = path.read_text()
    assert newest.endswith("line 049\n")
    assert "line 000" not in newest + (tmp_path / "apps.log.1").read_text()  # the oldest were dropped


def test_one_write_bigger_than_the_cap_stays_within_it(tmp_path):
    path = tmp_path / "console.log"
    log = c.CappedLog(str(path), cap=10)
    log.write(b"0123456789abcdefghijXYZ")
    log.close()
    assert (path.read_bytes(), (tmp_path / "console.log.1").read_bytes()) == (b"XYZ", b"abcdefghij")


def test_a_log_continues_an_existing_file_within_the_cap(tmp_path):
    path = tmp_path / "apps.log"
    path.write_bytes(b"x" * 8)
    log = c.CappedLog(str(path), cap=10)
    log.write(b"abc")
    log.close()
    assert path.read_bytes() == b"c" and (tmp_path / "apps.log.1").read_bytes() == b"x" * 8 + b"ab"


def test_cap_from_the_environment():
    assert c.log_cap({}) == c.LOG_CAP
    assert c.log_cap({"KVMPOD_LOG_CAP": "65536"}) == 65536
    for bad in ("x", "-1", "100", "1e6"):
        with pytest.raises(ValueError, match="KVMPOD_LOG_CAP"):
            c.log_cap({"KVMPOD_LOG_CAP": bad})


def test_lines_are_cut_at_the_limit_and_never_held_past_it():
    splitter = c.LineSplitter(max_line=4)
    assert splitter.feed(b"ab\ncdefghij") == ["ab", "cdef"]
    assert splitter.partial == b"ghij"  # at most the limit is held
    assert splitter.feed(b"k\r\n\xff\n") == ["ghij", "k", "\ufffd"]
    assert splitter.feed(b"tail") == [] and splitter.flush() == ["tail"]


def test_a_socket_source_logs_and_splits_and_ends(tmp_path):
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    source = c.LogSource(c.CappedLog(str(tmp_path / "apps.log"), cap=4096), socket_path=path)
    assert source.connect()
    peer, _ = server.accept()
    peer.sendall(b"[ 1.0] a[1]: one\n[ 1.1] a[1]: tw")
    import time

    time.sleep(0.05)
    assert source.lines() == ["[ 1.0] a[1]: one"]
    peer.sendall(b"o\n")
    peer.close()
    time.sleep(0.05)
    assert source.lines() == ["[ 1.1] a[1]: two"]
    assert source.ended
    source.log.close()
    assert (tmp_path / "apps.log").read_bytes() == b"[ 1.0] a[1]: one\n[ 1.1] a[1]: two\n"


def test_a_source_whose_socket_is_missing_does_not_connect(tmp_path):
    source = c.LogSource(c.CappedLog(str(tmp_path / "x.log")), socket_path=str(tmp_path / "none"))
    assert not source.connect() and source.fileno() is None and source.lines() == []


def test_a_flood_is_read_a_bounded_amount_per_call(tmp_path):
    r, w = os.pipe()
    source = c.LogSource(c.CappedLog(str(tmp_path / "h.log"), cap=1 << 30), fd=r)
    os.set_blocking(w, False)
    written = 0
    try:
        while True:
            written += os.write(w, b"y" * 65536)
    except BlockingIOError:
        pass
    source.lines()
    assert 0 < os.path.getsize(tmp_path / "h.log") <= c.MAX_READ_PER_TICK + c.READ_CHUNK
    os.close(w)
    source.lines(final=True)
    assert os.path.getsize(tmp_path / "h.log") == written


def test_a_write_the_file_system_refuses_is_dropped_and_counted_never_raised():
    """A disk that filled up while the pod runs (here /dev/full: every write is ENOSPC): kvmpod run
    keeps following its VM; the log counts what it could not keep and the first reason."""
    log = c.CappedLog("/dev/full", cap=4096)
    log.write(b"x" * 10000)
    log.write(b"more\n")
    assert log.dropped == 10005
    assert log.error is not None and log.error.strerror == "No space left on device"
    log.close()
