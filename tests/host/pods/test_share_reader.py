"""Issue 22, a hostile guest: the host's reader of the pod share (host.pods.share_reader and
pod_dirs.read_exit_records) with whatever root in the guest can leave there: symlinks to host files,
FIFOs, device nodes, directories, huge files, 10 MB lines, invalid UTF-8, NUL bytes, statuses out of
range, names that are not apps of the pod. It never raises, never blocks, never reads through a link
or outside the pod directory, and says what it could not read. Case by case, then by hypothesis over
arbitrary trees and records."""

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmpod.host.pods import pod_dirs as pods
from kvmpod.host.pods.app_output import MAX_READ, Follower
from kvmpod.host.pods.share_reader import MAX_RECORD_BYTES, read_records

OK = ("Result=success\nExecMainStartTimestampMonotonic=156180351\nExecMainExitTimestampMonotonic=159666843\n"
      "ExecMainCode=1\nExecMainStatus=0\n")
SECRET = "Result=exit-code\nExecMainStartTimestampMonotonic=1\nExecMainCode=1\nExecMainStatus=42\n"
UUID = "6f1c2d6e-4b53-4d39-9a8e-0d1c5a7b3e21"


def make_pod(base: Path) -> pods.PodDir:
    pod = pods.pod_dir(UUID, str(base / "pods"))
    os.makedirs(pod.exits)
    return pod


def test_each_kind_of_hostile_entry_is_reported_as_what_it_is(tmp_path: Path):
    pod = make_pod(tmp_path)
    secret = tmp_path / "host-secret"
    secret.write_text(SECRET)  # a host file the guest would like the host to take for a record
    apps = Path(pod.exits)
    (apps / "ok").write_text(OK)
    os.symlink(secret, apps / "link")
    os.mkfifo(apps / "fifo")
    os.mknod(apps / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (apps / "dir").mkdir()
    (apps / "huge").write_bytes(b"Result=success\n" + b"x" * (10 * 1024 * 1024))  # a 10 MB line
    (apps / "utf").write_bytes(OK.encode() + b"\xff\xfe")
    (apps / "nul").write_text(OK + "\0")
    (apps / "range").write_text(OK.replace("ExecMainStatus=0", "ExecMainStatus=99999"))
    (apps / "signal").write_text(OK.replace("ExecMainCode=1", "ExecMainCode=2").replace("Status=0", "Status=200"))
    (apps / "code").write_text(OK.replace("ExecMainCode=1", "ExecMainCode=7"))
    (apps / "time").write_text(OK.replace("=159666843", "=" + "9" * 40))
    (apps / "result").write_text(OK.replace("Result=success", "Result=\x1b[2J"))
    (apps / "not-an-app").write_text(SECRET)
    names = ["ok", "link", "fifo", "null", "dir", "huge", "utf", "nul", "range", "signal", "code", "time", "result",
             "missing"]

    exits, problems = pods.read_exit_records(pod, names)

    assert exits["ok"].exit_status == 0 and "ok" not in problems
    assert all(exits[n] is None for n in names if n != "ok")
    assert problems == {
        "link": "its record is a symbolic link, not a regular file",
        "fifo": "its record is a FIFO, not a regular file",
        "null": "its record is a character device, not a regular file",
        "dir": "its record is a directory, not a regular file",
        "huge": f"its record is larger than {MAX_RECORD_BYTES} bytes",
        "utf": "its record is not UTF-8",
        "nul": "its record holds a NUL byte",
        "range": "its record has an ExecMainStatus= out of range ('99999')",
        "signal": "its record has an ExecMainStatus= out of range ('200')",
        "code": "its record has an ExecMainCode= systemd never writes ('7')",
        "time": f"its record has a ExecMainExitTimestampMonotonic= out of range ('{'9' * 40}')",
        "result": "its record has no valid Result= ('\\x1b[2J')",
    }
    assert "missing" not in problems  # no record at all: the pod ended before the guest wrote it
    assert pods.pod_exit_status(exits) == 0  # nothing the guest planted became a status (42)


@pytest.mark.parametrize("planted", ["share", "apps"])
def test_a_symlink_planted_on_the_way_is_not_followed(tmp_path: Path, planted: str):
    pod = make_pod(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "apps").mkdir(parents=True)
    (elsewhere / "apps/web").write_text(SECRET)
    (elsewhere / "web").write_text(SECRET)
    victim = Path(pod.share) if planted == "share" else Path(pod.exits)
    os.rmdir(pod.exits)
    if planted == "share":
        os.rmdir(pod.share)
    os.symlink(elsewhere, victim)

    exits, problems = pods.read_exit_records(pod, ["web"])

    assert exits == {"web": None}
    assert problems == {"web": "its record share/apps is a symbolic link or not a directory"}


def test_names_that_are_not_one_component_are_never_opened(tmp_path: Path):
    pod = make_pod(tmp_path)
    (tmp_path / "pods/secret").write_text(SECRET)
    records = read_records(pod.path, ("share", "apps"), ["../../secret", "..", ".", ""])
    assert all(r.data is None and "is not a file name" in r.problem for r in records.values())


def test_the_apps_output_is_read_in_bounded_pieces(tmp_path: Path):
    """A guest flooding its serial port: kvmpod run reads at most MAX_READ a poll, lines capped."""
    log = tmp_path / "apps.log"
    log.write_bytes(b"x" * (3 * MAX_READ) + b"\nend\n")
    follower = Follower(str(log))
    first = follower.lines()
    assert sum(len(line) for line in first) <= MAX_READ
    rest = follower.lines(final=True)
    assert rest[-1] == "end"


# ---------------------------------------------------------------- arbitrary trees, by hypothesis

APP_NAMES = ["web", "db", "a-b", "x"]
KINDS = ["file", "record", "symlink", "symlink-dir", "fifo", "dir", "device", "huge"]
FIELDS = ["Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestampMonotonic",
          "ExecMainExitTimestampMonotonic", "Other"]
values = st.one_of(st.text(max_size=30), st.integers(-2**70, 2**70).map(str),
                   st.sampled_from(["success", "exit-code", "signal", "core-dump", "0", "1", "2", "3", "255", "64"]))
records = st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=8).map(
    lambda pairs: "".join(f"{k}={v}\n" for k, v in pairs).encode("utf-8", "surrogatepass"))
entries = st.dictionaries(
    st.sampled_from(APP_NAMES + ["not-an-app", ".web.tmp"]),
    st.one_of(st.tuples(st.just("file"), st.binary(max_size=300)), st.tuples(st.just("record"), records),
              st.tuples(st.sampled_from(KINDS[2:]), st.just(b""))),
    max_size=6)
tops = st.sampled_from(["normal", "apps-symlink", "share-symlink", "apps-file", "no-apps"])


@settings(max_examples=int(os.environ.get("KVMPOD_PROPERTY_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=entries, top=tops)
def test_any_tree_the_guest_leaves_is_read_safely(tree, top):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pod = make_pod(base)
        outside = base / "outside"
        (outside / "apps").mkdir(parents=True)
        for name in APP_NAMES:
            (outside / name).write_text(SECRET)
            (outside / "apps" / name).write_text(SECRET)
        apps = Path(pod.exits)
        if top == "apps-symlink":
            apps.rmdir()
            os.symlink(outside / "apps", apps)
        elif top == "share-symlink":
            apps.rmdir()
            Path(pod.share).rmdir()
            os.symlink(outside, pod.share)
        elif top == "apps-file":
            apps.rmdir()
            apps.write_text(SECRET)
        elif top == "no-apps":
            apps.rmdir()
        else:
            for name, (kind, data) in tree.items():
                path = apps / name
                if kind in ("file", "record"):
                    path.write_bytes(data)
                elif kind == "symlink":
                    os.symlink(outside / name if name in APP_NAMES else "/etc/shadow", path)
                elif kind == "symlink-dir":
                    os.symlink(outside, path)
                elif kind == "fifo":
                    os.mkfifo(path)
                elif kind == "dir":
                    path.mkdir()
                elif kind == "device":
                    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless if read
                else:
                    path.write_bytes(b"Result=success\n" * 100000)
        before = sorted(p.name for p in base.iterdir())

        exits, problems = pods.read_exit_records(pod, APP_NAMES)

        assert set(exits) == set(APP_NAMES)  # only the pod's apps; "not-an-app" is never looked at
        assert sorted(p.name for p in base.iterdir()) == before  # nothing written outside
        for name in APP_NAMES:
            entry = tree.get(name) if top == "normal" else None
            result = exits[name]
            if result is not None:
                # only a regular file in the real share can give a record, and only a valid one
                assert entry is not None and entry[0] in ("file", "record")
                text = entry[1].decode("utf-8")
                assert pods.exit_problem(text) is None and "\0" not in text
                assert 0 <= result.status <= 255 and result.code in ("", "exited", "killed", "dumped")
                assert result.exit_status == (result.status if result.code == "exited" or not result.started
                                              else 128 + result.status) or not result.started
                assert name not in problems
            elif top != "normal":
                assert top == "no-apps" and name not in problems or problems[name].startswith("its record share/apps")
            elif entry is not None and entry[0] not in ("file", "record"):
                assert name in problems  # a link, FIFO, device or directory is said to be one
            assert not (result is not None and result.status == 42)  # the host file is never read
        assert 0 <= pods.pod_exit_status(exits) <= 255
