"""kvmpod enter's guest server (guest.enter_server) behind the real host relay (host.pods.enter_relay)
and real `kvmpod enter` clients (host.pods.enter_client, each its own process): everything of a
real enter but the VM, the virtio port (a UNIX socket here, as QEMU's host side is) and systemd
(each command is a plain process, ProcessCommand, instead of a transient unit).

What this can show: the protocol and its flow control end to end (a binary blob both ways, stdin
bigger than every window and buffer, a command that stops reading), several enters at once on the
one port, exit statuses and signals, a TTY session. What it cannot: the app's settings as systemd
applies them (the e2e boot "enter" does that).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kvmpod.guest import enter_server as s
from kvmpod.host.pods import enter_relay, pod_dirs

GENERATOR = str(Path(s.__file__).resolve().parents[2])
UUID = "0b8e4c2e-1f9a-4d7e-9a57-3f0c2d6b8a11"
CLIENT = ("import sys\n"
          "from kvmpod.host.pods import pod_dirs, enter_client\n"
          "pod_dirs.QMP_DIR = sys.argv[1]\n"
          "sys.exit(enter_client.enter(pod_dirs.PodDir(sys.argv[2]), 'app', sys.argv[3:]))\n")
SERVER = ("import sys\n"
          "sys.path.insert(0, sys.argv[1])\n"
          "from test_enter_server import ProcessServer\n"
          "from kvmpod.guest import enter_server\n"
          "sys.exit(enter_server.main(ProcessServer))\n")


def _signals_as_systemd_leaves_them() -> None:
    """systemd starts a unit's process with every signal at its default and none blocked; a test run
    whose shell ignored SIGINT (a CI started in the background: `cmd &`) would otherwise hand that on
    to the command, which then never sees the SIGINT the test passes on."""
    for signum in range(1, signal.NSIG):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class ProcessCommand:
    """A command as a process of its own session, as systemd would start the unit's."""

    def __init__(self, name, words, settings, *, stdin=None, stdout=None, stderr=None, pty_path=None):
        argv = [words[0].decode()] + [w.decode().replace("$$", "$") for w in words[1:]]
        env = dict(os.environ, **dict(e.decode().split("=", 1) for e in settings.get(b"Environment", [])))
        if pty_path is not None:
            def controlling_terminal():
                _signals_as_systemd_leaves_them()
                os.setsid()
                fd = os.open(pty_path, os.O_RDWR)  # the session's first terminal becomes its controlling one
                for target in (0, 1, 2):
                    os.dup2(fd, target)
            self.proc = subprocess.Popen(argv, preexec_fn=controlling_terminal, env=env)
        else:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
                                         env=env, preexec_fn=_signals_as_systemd_leaves_them)

    def kill(self, signum):
        self.proc.send_signal(signum)

    def status(self):
        rc = self.proc.poll()
        return None if rc is None else (128 - rc if rc < 0 else rc)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class ProcessServer(s.Server):
    def app_settings(self, app):
        if app != "app":
            raise s.SessionError(f"the pod has no app {app!r}")
        return {b"RootDirectory": b"/", b"Environment": [b"FROM_APP=yes"]}

    def start_command(self, name, words, settings, **stdio):
        return ProcessCommand(name, words, settings, **stdio)


@pytest.fixture
def pod(monkeypatch):
    run = tempfile.mkdtemp(prefix="ks-")  # short: socket paths must fit 108 bytes
    monkeypatch.setattr(pod_dirs, "QMP_DIR", run)
    pod = pod_dirs.PodDir(os.path.join(run, UUID))
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.bind(pod.enter_port)
    qemu.listen(1)
    relay = enter_relay.EnterRelay(pod.enter_port, pod.enter_socket)
    relay.start()
    port, _ = qemu.accept()
    # the server as the guest runs it: its own process (main(): its signal dispositions), the port its stdin
    server = subprocess.Popen([sys.executable, "-c", SERVER, os.path.dirname(__file__)], stdin=port,
                              env=dict(os.environ, PYTHONPATH=GENERATOR))
    deadline = time.monotonic() + 10
    while not os.path.exists(pod.enter_socket) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield run, pod
    relay.stop()
    relay.join(5)
    port.close()
    qemu.close()
    try:
        rc = server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert rc == 0, "the server ends when the host closes the port, having survived every session"


def client(pod_env, *argv, **popen):
    run, pod = pod_env
    env = dict(os.environ, PYTHONPATH=GENERATOR)
    return subprocess.Popen([sys.executable, "-c", CLIENT, run, pod.path, *argv], env=env, **popen)


def enter(pod_env, *argv, stdin=b"", timeout=60):
    proc = client(pod_env, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(stdin, timeout=timeout)
    return out, err, proc.returncode


def test_output_stderr_and_exit_status(pod):
    assert enter(pod, "sh", "-c", 'echo out; echo "$FROM_APP" >&2; exit 7') == (b"out\n", b"yes\n", 7)


def test_a_binary_blob_bigger_than_every_window_both_ways(pod):
    blob = os.urandom(3 * 1024 * 1024 + 12345)  # > STDIN_WINDOW, > a pipe, > MAX_PAYLOAD, not a multiple
    out, err, rc = enter(pod, "cat", stdin=blob)
    assert (rc, err, len(out)) == (0, b"", len(blob))
    assert out == blob


def test_stdin_to_a_command_that_stops_reading_ends_it_and_not_the_server(pod):
    out, err, rc = enter(pod, "head", "-c", "5", stdin=b"abcdefgh" * 200000)
    assert (out, rc) == (b"abcde", 0), err
    assert enter(pod, "sh", "-c", "exit 3")[2] == 3, "the server serves the next enter"


def test_a_signal_is_128_plus_n_and_sigint_is_passed_on(pod):
    assert enter(pod, "sh", "-c", "kill -TERM $$")[2] == 128 + 15
    proc = client(pod, "sh", "-c", "echo ready; exec sleep 60", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 128 + signal.SIGINT


def test_several_enters_at_once_each_with_its_own_streams(pod, tmp_path):
    flag = tmp_path / "flag"
    waiter = client(pod, "sh", "-c", f"echo waiting; while [ ! -e {flag} ]; do sleep 0.05; done; echo saw-flag",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert waiter.stdout.readline() == b"waiting\n"
    blobs = [os.urandom(600 * 1024) for _ in range(3)]
    movers = [client(pod, "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in blobs]
    results = [None] * len(movers)

    def move(k):
        results[k] = movers[k].communicate(blobs[k], timeout=60)

    threads = [threading.Thread(target=move, args=(k,)) for k in range(len(movers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert [r[0] == b for r, b in zip(results, blobs)] == [True] * len(blobs)
    assert waiter.poll() is None, "the first enter still runs while the others came and went"
    assert enter(pod, "touch", str(flag))[2] == 0
    out, _ = waiter.communicate(timeout=30)
    assert (out, waiter.returncode) == (b"saw-flag\n", 0)


def test_an_unknown_app_or_command_is_refused_with_the_reason(pod):
    out, err, rc = enter(pod, "/nonexistent/x")
    assert rc == 2 and b"/nonexistent/x is not in the app's image" in err, err


def test_a_terminal_session(pod):
    import pty

    master, slave = pty.openpty()
    proc = client(pod, "sh", "-c", "tty; read line; echo got-$line; exit 5", stdin=slave, stdout=slave,
                  stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 30
    while b"/dev/pts/" not in seen and time.monotonic() < deadline:
        seen += os.read(master, 4096)
    os.write(master, b"hello\r")
    while b"got-hello" not in seen and time.monotonic() < deadline:
        seen += os.read(master, 4096)
    assert proc.wait(timeout=30) == 5, bytes(seen)
    os.close(master)
    assert b"got-hello" in seen


def test_the_transient_unit_shares_the_apps_tmp_and_sandbox():
    """The settings read from the app's unit become the command's, and with PrivateTmp= the command joins
    the app's namespace (its /tmp, not a fresh one)."""
    read = {name: None for name in s.COPIED}
    read.update(RootDirectory=b"/opt/stage2/main/rootfs", User=b"1000", PrivateTmp=True, NoNewPrivileges=False,
                Environment=[b"FOO=bar"], SupplementaryGroups=[], InaccessiblePaths=[b"-/x/sys/module"],
                BindReadOnlyPaths=[(b"/usr/bin/busybox", b"/.kvmpod/env", False, 0)])
    settings = s.command_settings("main", read)
    assert settings[b"JoinsNamespaceOf"] == [b"main.service"]
    assert settings[b"NoNewPrivileges"] is False, "a False setting is copied, not dropped"
    assert b"SupplementaryGroups" not in settings and b"ReadOnlyPaths" not in settings
    assert settings[b"BindReadOnlyPaths"] == read["BindReadOnlyPaths"]
    assert b"JoinsNamespaceOf" not in s.command_settings("main", dict(read, PrivateTmp=False))
    every = s.command_settings("main", {name: b"x" for name in s.COPIED} | {"PrivateTmp": True})
    assert {key.decode() for key in every} <= set(s.SIGNATURES), "pystemd is told the signature of each"
