"""kvmpod logs (host.pods.pod_logs), kvmpod enter's refusals (host.pods.enter_client), and the pod's
own unit on a systemd host (host.pods.machine_unit, machined.register_own_unit)."""

import json
import os
import threading
import time
import uuid

import pytest

from kvmpod.host import cli
from kvmpod.host.pods import enter_client, machine_unit, pod_dirs, pod_logs
from kvmpod.host.pods.machined import register_own_unit
from kvmpod.pod.problems import InvalidInput

UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"


@pytest.fixture
def pod(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMPOD_PODS_DIR", str(tmp_path))
    pod = pod_dirs.PodDir(str(tmp_path / UUID))
    os.mkdir(pod.path)
    pod_dirs.write_state(pod, apps=["web", "db"], state="exited", enter=True)
    return pod


def run_cli(capsys, *args):
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_logs_of_an_ended_pod_rotated_part_first_and_one_app(pod, capsys):
    with open(pod.apps_log + ".1", "w") as f:
        f.write("[ 1.0] web[5]: old\n[ 1.1] db[6]: old db\n")
    with open(pod.apps_log, "w") as f:
        f.write("[ 2.0] web[5]: new\n[ 2.1] db[6]: new db\n[ 2.2] web[5]: last without newline")
    assert run_cli(capsys, "logs", UUID) == (0, "[ 1.0] web[5]: old\n[ 1.1] db[6]: old db\n[ 2.0] web[5]: new\n"
                                                "[ 2.1] db[6]: new db\n[ 2.2] web[5]: last without newline\n", "")
    status, out, _ = run_cli(capsys, "logs", UUID, "--app", "db")
    assert (status, out) == (0, "[ 1.1] db[6]: old db\n[ 2.1] db[6]: new db\n")


def test_logs_refusals(pod, capsys):
    assert run_cli(capsys, "logs", UUID, "--app", "nope")[0::2] == (
        2, f"kvmpod: --app: 'nope' is not an app of pod {UUID} (its apps: web, db)\n")
    other = "11111111-2222-4333-8444-555555555555"
    status, _, err = run_cli(capsys, "logs", other)
    assert status == 2 and f"no pod {other}" in err


def test_logs_follow_goes_on_across_a_rotation_until_the_pod_ends(pod):
    lock = pod_dirs.hold_lock(pod)  # the pod "runs"
    log = open(pod.apps_log, "w")
    log.write("[ 1.0] web[5]: first\n")
    log.flush()
    got = []
    follower = threading.Thread(target=pod_logs.show_logs, args=(pod, None, True, got.append))
    follower.start()
    time.sleep(0.5)
    log.write("[ 1.1] web[5]: second\n")
    log.close()
    os.replace(pod.apps_log, pod.apps_log + ".1")  # what kvmpod run's CappedLog does at the cap
    with open(pod.apps_log, "w") as log:
        log.write("[ 1.2] web[5]: third\n")
    time.sleep(0.6)
    assert follower.is_alive(), "--follow ended while the pod ran"
    os.close(lock)
    follower.join(5)
    assert not follower.is_alive()
    assert "".join(got) == "[ 1.0] web[5]: first\n[ 1.1] web[5]: second\n[ 1.2] web[5]: third\n"


def test_enter_refuses_a_pod_that_is_not_running(pod, capsys):
    status, _, err = run_cli(capsys, "enter", UUID, "--app", "web", "--", "true")
    assert status == 2 and err == (f"kvmpod: UUID: pod {UUID} is not running (exited); kvmpod enter needs a "
                                   f"running pod (its output: kvmpod logs {UUID})\n")


def test_enter_refusals_on_a_running_pod(pod):
    lock = pod_dirs.hold_lock(pod)
    try:
        with pytest.raises(InvalidInput, match="has 2 apps"):
            enter_client.check_pod(pod, None)
        with pytest.raises(InvalidInput, match="'nope' is not an app"):
            enter_client.check_pod(pod, "nope")
        assert enter_client.check_pod(pod, "db") == "db"
        pod_dirs.write_state(pod, enter=False, hypervisor="lkvm")
        with pytest.raises(InvalidInput, match="lkvm has no virtio-serial port"):
            enter_client.check_pod(pod, "db")
        pod_dirs.write_state(pod, hypervisor="qemu-system-x86_64")
        with pytest.raises(InvalidInput, match="booted without the enter port"):
            enter_client.check_pod(pod, "db")
        pod_dirs.write_state(pod, enter=True)
        with pytest.raises(RuntimeError, match="cannot reach pod .* enter relay"):
            enter_client.enter(pod, "db", ["true"], stdin=os.open(os.devnull, os.O_RDONLY))
    finally:
        os.close(lock)


def test_the_pod_unit_properties():
    props = machine_unit.unit_properties(["/usr/bin/python3", "-m", "kvmpod.host.cli", "run", "--uuid", UUID],
                                         f"kvmpod-{UUID}.service", "/srv",
                                         {"KVMPOD_PODS_DIR": "/p", "HOME": "/root", "PATH": "/bin",
                                          "KVMPOD_RUN_UNIT": "forged"}, (10, 11, 12), 210)
    assert props[b"Slice"] == b"machine.slice" and props[b"KillMode"] == b"mixed"
    assert props[b"TimeoutStopUSec"] == 210_000_000
    assert props[b"Environment"] == [b"KVMPOD_PODS_DIR=/p", b"PATH=/bin", f"KVMPOD_RUN_UNIT=kvmpod-{UUID}.service".encode()]
    assert props[b"ExecStart"][0][0] == b"/usr/bin/python3" and props[b"ExecStart"][0][1][-1] == UUID.encode()
    assert (props[b"StandardInputFileDescriptor"], props[b"StandardErrorFileDescriptor"]) == (10, 12)
    assert props[b"_custom"] == (b"AddRef", b"b", True)
    assert props[b"WorkingDirectory"] == b"/srv"


def test_the_unit_registers_itself_as_the_machine():
    calls = []

    class FakeManager:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        class Manager:
            @staticmethod
            def RegisterMachine(*args):
                calls.append(args)

    assert register_own_unit(UUID, 77, manager=FakeManager) == f"kvmpod-{UUID}"
    assert calls == [(f"kvmpod-{UUID}".encode(), uuid.UUID(UUID).bytes, b"kvmpod", b"vm", 77, b"")]


def test_enter_streams_a_regular_file_as_stdin(pod, tmp_path, monkeypatch):
    """epoll refuses regular files and /dev/null (EPERM): the client reads them without it."""
    import socket as socketlib

    from kvmpod.guest import enter_protocol as p

    monkeypatch.setattr(pod_dirs, "QMP_DIR", tempfile_dir())
    lock = pod_dirs.hold_lock(pod)
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    server.bind(pod.enter_socket)
    server.listen(1)
    got = []

    def relay():
        conn, _ = server.accept()
        reader, frames = p.FrameReader(p.TO_GUEST), []
        while not any(k == p.STDIN_EOF for _, k, _ in frames):
            frames += reader.feed(conn.recv(65536))
        got.extend(frames)
        conn.sendall(p.frame(0, p.STDOUT, b"out") + p.frame(0, p.EXIT, p.pack_status(3)))
        conn.close()

    thread = threading.Thread(target=relay)
    thread.start()
    stdin = tmp_path / "in"
    stdin.write_bytes(b"x" * 100000)
    out = tmp_path / "out"
    fd_in, fd_out = os.open(stdin, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        assert enter_client.enter(pod, "db", ["cat"], stdin=fd_in, stdout=fd_out) == 3
    finally:
        os.close(fd_in)
        os.close(fd_out)
        os.close(lock)
    thread.join(5)
    assert out.read_bytes() == b"out"
    assert json.loads(got[0][2])["argv"] == ["cat"]
    assert b"".join(d for _, k, d in got if k == p.STDIN) == b"x" * 100000


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ke-")


def test_enter_says_so_when_the_guest_never_answers(pod, monkeypatch, capsys):
    import socket as socketlib

    monkeypatch.setattr(pod_dirs, "QMP_DIR", tempfile_dir())
    monkeypatch.setenv("KVMPOD_ENTER_WAIT", "1")
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    server.bind(pod.enter_socket)
    server.listen(1)  # a relay whose guest has no server: it takes the request and nothing comes back
    r, w = os.pipe()
    try:
        assert enter_client.enter(pod, "db", ["true"], stdin=r) == enter_client.EXIT_LOST
    finally:
        os.close(r)
        os.close(w)
        server.close()
    assert "did not answer within 1 s" in capsys.readouterr().err
