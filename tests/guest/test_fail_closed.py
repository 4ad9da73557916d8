"""Issue 11, case by case: hostile files, crashes, limits, unit-file injection, ids, symlinks.

Each case runs the real generator (a separate process, with a timeout, so a hang fails the test
instead of hanging it) on a real guest tree in tmp_path, then checks what a booting guest would
get: exit status, the kernel-log lines (stderr with --root) and the files written.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from systemd_readback import dump_units
from systemd_tools import verify_units

GENERATOR = [sys.executable, "-I", "-m", "kvmpod.guest.generator"]
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "generator"))
REFUSAL = "50-kvmpod-invalid-manifest.conf"


def pod(apps=None, volumes=None) -> dict:
    if apps is None:
        apps = [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                 "mounts": [{"volume": "data", "path": "/data"}]}]
    if volumes is None:
        volumes = [{"name": "data", "kind": "host", "source": "/srv/data"}]
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps, "volumes": volumes}


class Guest:
    def __init__(self, base: Path, apps=("web",)):
        self.root = base / "root"
        self.out = base / "out"
        self.out.mkdir()
        (self.root / "etc/kvmpod").mkdir(parents=True)
        for app in apps:
            (self.root / "opt/stage2" / app / "rootfs").mkdir(parents=True)

    def manifest(self, document) -> "Guest":
        text = document if isinstance(document, str) else json.dumps(document)
        (self.root / "etc/kvmpod/pod.json").write_text(text)
        return self

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*GENERATOR, "--root", str(self.root), *extra, str(self.out)],
                              capture_output=True, text=True, timeout=60, env=ENV)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.out)) for p in self.out.rglob("*"))


def refused_only(guest: Guest, apps=("web",)) -> bool:
    """Exit 1's promise: no unit at all, and the refusal drop-in for every staged app."""
    expected = sorted(f for app in apps for f in (f"{app}.service.d", f"{app}.service.d/{REFUSAL}"))
    if guest.files() != expected:
        return False
    for app in apps:
        lines = (guest.out / f"{app}.service.d" / REFUSAL).read_text().splitlines()
        assert "AssertPathExists=!/" in lines, lines
    return True


@pytest.fixture
def guest(tmp_path) -> Guest:
    return Guest(tmp_path)


# --- reads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["etc/kvmpod/pod.json", "etc/kvmpod/networks.json", "opt/stage2/web/manifest",
                                   "opt/stage2/web/rootfs/etc/passwd", "etc/passwd"])
def test_a_fifo_anywhere_the_generator_reads_is_refused_without_blocking(guest, where):
    document = pod()
    if where == "opt/stage2/web/manifest":
        del document["apps"][0]["app"]  # the image manifest is read only then
    if where == "opt/stage2/web/rootfs/etc/passwd":
        document["apps"][0]["app"]["user"] = "www"  # the app's passwd is read only for a name
    guest.manifest(document)
    path = guest.root / where
    if path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)

    result = guest.run()

    assert result.returncode == 1, result.stderr
    assert "is a FIFO; it must be a regular UTF-8 file of at most 4 MiB" in result.stderr
    assert refused_only(guest)


def test_a_link_to_dev_zero_is_refused_not_read(guest):
    (guest.root / "etc/kvmpod/pod.json").symlink_to("/dev/zero")

    result = guest.run()

    assert result.returncode == 1
    assert "/etc/kvmpod/pod.json: is a character device" in result.stderr
    assert refused_only(guest)


def test_a_file_over_the_limit_is_refused(guest):
    guest.manifest(" " * (4 * 1024 * 1024) + json.dumps(pod()))

    result = guest.run()

    assert result.returncode == 1
    assert "/etc/kvmpod/pod.json: is too large" in result.stderr
    assert refused_only(guest)


# --- crashes that must still refuse the apps --------------------------------------------------------

def with_app(**changes) -> dict:
    document = pod()
    document["apps"][0]["app"].update(changes)
    return document


CRASHERS = {
    "deep-nesting": ("[" * 100000, "/etc/kvmpod/pod.json: is nested more than 100 levels deep"),
    "5000-digit-uid": ('{"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [], "volumes": [{"name": "e", '
                       '"kind": "empty", "uid": ' + "9" * 5000 + "}]}", "/etc/kvmpod/pod.json: is not valid JSON"),
    "unhashable-volume-name": (pod(volumes=[{"name": []}]), "volumes[0].name: must be a string, not an array"),
    "4100-char-mount-path": (pod(apps=[{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                                        "mounts": [{"volume": "data", "path": "/" + "a/" * 2050}]}]),
                             "apps[0].mounts[0].path: "),
    "300-char-host-volume": (pod(volumes=[{"name": "v" * 300, "kind": "host", "source": "/srv"}],
                                 apps=[]), "volumes[0].name: is 300 characters long"),
    "lone-surrogate-env": (with_app(environment=[{"name": "X", "value": "\ud800"}]),
                           "apps[0].app.environment[0].value: contains a lone UTF-16 surrogate"),
    "user-out-of-range": (with_app(user="99999999999999999999"), "apps[0].app.user: 99999999999999999999 is out of range"),
    "group-4294967296": (with_app(group="4294967296"), "apps[0].app.group: 4294967296 is out of range"),
    "empty-user": (with_app(user=""), "apps[0].app.user: is empty"),
    "empty-volume-uid": (pod(apps=[], volumes=[{"name": "e", "kind": "empty", "uid": 9223372036854775808}]),
                         "volumes[0].uid: 9223372036854775808 is out of range"),
    "mount-path-trailing-backslash": (pod(apps=[{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                                                 "mounts": [{"volume": "data", "path": "/data\\"}]}]),
                                      "apps[0].mounts[0].path: '/data\\\\' ends in a backslash"),
    "working-directory-trailing-backslash": (with_app(workingDirectory="/srv\\"),
                                             "apps[0].app.workingDirectory: '/srv\\\\' ends in a backslash"),
    "app-named-like-kvmpods-own-unit": (pod(apps=[{"name": "kvmpod-app-ids", "app": {"exec": ["/bin/x"], "user": "1000",
                                                                          "group": "0"}},
                                             {"name": "web", "app": {"exec": ["/bin/x"], "user": "1000", "group": "0"}}]),
                                        "apps[0].name: kvmpod would write kvmpod-app-ids.service twice"),
    "long-app-name": (pod(apps=[{"name": "a" * 234, "app": {"exec": ["/bin/x"], "user": "0", "group": "0"}}]),
                      "apps[0].name: is 234 characters long; kvmpod takes at most 233"),
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_hostile_manifests_are_input_errors_that_refuse_every_app(guest, case):
    document, message = CRASHERS[case]
    guest.manifest(document)

    result = guest.run()

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert "these apps are refused: web" in result.stderr
    assert refused_only(guest)


@pytest.mark.parametrize("uid", ["²", "9" * 5000, "4294967295", "65535"])
def test_a_passwd_line_with_an_unusable_uid_is_as_if_absent(guest, uid):
    guest.manifest(with_app(user="www"))
    (guest.root / "opt/stage2/web/rootfs/etc").mkdir()
    (guest.root / "opt/stage2/web/rootfs/etc/passwd").write_text(f"www:x:{uid}:0::/:/bin/sh\n")

    result = guest.run()

    assert result.returncode == 1
    assert "apps[0].app.user: 'www' is neither a number nor a user in the app's /etc/passwd" in result.stderr
    assert refused_only(guest)


def test_an_unexpected_exception_still_refuses_every_app(guest):
    """A bug (here a MemoryError injected into the parser) must fail closed too, and the refusal must
    not need the manifest: it names the apps from /opt/stage2."""
    (guest.root / "opt/stage2/other/rootfs").mkdir(parents=True)
    guest.manifest(pod())
    script = ("import sys\n"
              "def boom(*a, **k):\n    raise MemoryError('injected')\n"
              "import kvmpod.guest.generator as g\ng.parse_pod_manifest = boom\n"
              "sys.exit(g.main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-I", "-c", script, "--root", str(guest.root), str(guest.out)],
                            capture_output=True, text=True, timeout=60, env=ENV)

    assert result.returncode == 1, result.stderr
    assert "internal error (MemoryError: injected)" in result.stderr
    assert "these apps are refused: other, web" in result.stderr
    assert refused_only(guest, apps=("other", "web"))


# --- limits -----------------------------------------------------------------------------------------

def test_an_empty_volume_of_228_characters_gets_systemds_hashed_unit_name(guest, tmp_path):
    name = "v" * 240
    guest.manifest(pod(volumes=[{"name": name, "kind": "empty"}],
                       apps=[{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                              "mounts": [{"volume": name, "path": "/data"}]}]))

    result = guest.run()

    assert result.returncode == 0, result.stderr
    services = [f for f in guest.files() if f.startswith("kvmpod-empty-volume-")]
    assert len(services) == 1 and len(services[0]) == 255
    verified = verify_units([guest.out], [guest.out / services[0]])
    assert verified.returncode == 0, verified.stderr


def test_a_stage2_directory_too_long_for_a_unit_is_skipped_and_the_others_refused(guest):
    (guest.root / "opt/stage2" / ("x" * 250)).mkdir()
    guest.manifest("not json")

    result = guest.run()

    assert result.returncode == 1
    assert refused_only(guest)


# --- unit-file injection ----------------------------------------------------------------------------

def test_a_manifest_path_ending_in_a_backslash_cannot_swallow_the_refusal(guest):
    (guest.root / "etc/kvmpod/pod\\").write_text(json.dumps(pod()))

    result = guest.run("--manifest", "/etc/kvmpod/pod\\")

    assert result.returncode == 1
    assert "--manifest: '/etc/kvmpod/pod\\\\' ends in a backslash" in result.stderr
    assert refused_only(guest)
    assert "SourcePath" not in (guest.out / "web.service.d" / REFUSAL).read_text()


def test_kvmpod_manifest_on_the_kernel_command_line_ending_in_a_backslash_is_refused(guest):
    (guest.root / "etc/kvmpod/pod\\").write_text(json.dumps(pod()))
    (guest.root / "proc").mkdir()
    (guest.root / "proc/cmdline").write_text("quiet kvmpod.manifest=/etc/kvmpod/pod\\\n")

    result = guest.run()

    assert result.returncode == 1
    assert "kvmpod.manifest: '/etc/kvmpod/pod\\\\' ends in a backslash" in result.stderr
    assert refused_only(guest)
    assert "SourcePath" not in (guest.out / "web.service.d" / REFUSAL).read_text()


def test_9p_options_ending_in_a_backslash_are_refused(guest):
    guest.manifest(pod())
    (guest.root / "proc").mkdir()
    (guest.root / "proc/cmdline").write_text("quiet kvmpod.9p_options=a\\\n")

    result = guest.run()

    assert result.returncode == 1
    assert "kvmpod.9p_options: Options='a\\\\' ends in a backslash" in result.stderr
    assert refused_only(guest)


EXEC = ["/bin/echo", "zero\u200bwidth", "next\u0085line", "tab\there", "bell\x07", "back\\", "dollar$HOME",
        "100%", ";", "", "quote\"d", "\U0001f600", "\x7f"]


def test_exec_environment_and_working_directory_read_back_as_systemd_parses_them(guest, tmp_path):
    env = [{"name": "A", "value": "x\u200by"}, {"name": "B", "value": "ends\\"}, {"name": "C", "value": "%n $X"}]
    guest.manifest(with_app(exec=EXEC, environment=env, workingDirectory="/w d/100%/\u00e9"))

    result = guest.run()

    assert result.returncode == 0, result.stderr
    unit = dump_units(guest.out, ["web.service"])["web.service"]
    # systemd expands $VAR at run time; "$$" is a literal "$" then.
    assert [w.replace("$$", "$") for w in unit["ExecStart"][0]] == EXEC
    assert unit["Environment"] == ["AC_APP_NAME=web", "A=x\u200by", "B=ends\\", "C=%n $X"]
    assert unit["WorkingDirectory"] == ["/w d/100%/\u00e9"]


# --- paths outside the app --------------------------------------------------------------------------

@pytest.mark.parametrize("link,target", [("opt/stage2", "/"), ("opt/stage2/web", ".."),
                                         ("opt/stage2/web/rootfs", "/etc"), ("opt", "/tmp")])
def test_a_symlink_between_the_guest_root_and_an_apps_rootfs_is_refused(tmp_path, link, target):
    guest = Guest(tmp_path, apps=())
    guest.manifest(pod())
    path = guest.root / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)

    result = guest.run()

    assert result.returncode == 1, result.stderr
    assert f"apps[0].name: /{link} is a symlink in the guest" in result.stderr
    assert not [f for f in guest.files() if f.endswith(".mount")]


def test_the_generator_never_writes_through_a_symlink_in_its_output_directory(guest, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (guest.out / "web.service.requires").symlink_to(elsewhere)
    guest.manifest(pod())

    result = guest.run()

    assert result.returncode == 1
    assert "cannot write" in result.stderr and "web.service.requires" in result.stderr
    assert list(elsewhere.iterdir()) == []
    # Nothing of the run is left but the link it found, and the refusal it could still write.
    assert guest.files() == ["web.service.d", f"web.service.d/{REFUSAL}", "web.service.requires"]


def test_a_write_that_fails_half_way_for_any_reason_leaves_nothing(tmp_path):
    """All or nothing even when the failure is no OSError: a text that cannot be encoded used to
    leave an empty <app>.service behind."""
    from kvmpod.guest.output import write_outputs
    from kvmpod.guest.unitfile import GeneratedFile, requires_link

    outputs = [GeneratedFile("a.mount", "ok\n"), requires_link("web.service", "a.mount"),
               GeneratedFile("web.service", "bad \ud800\n")]

    with pytest.raises(UnicodeEncodeError):
        write_outputs(outputs, str(tmp_path))

    assert list(tmp_path.iterdir()) == []
