"""Units rendered on the host (kvmpod.host.pods.prerendered_units) and unpacked by the generator's launcher.

The launcher is run as packaged (packaging/install-tree), as systemd runs it, on real directories:
- every golden case of tests/guest/generator_cases that renders a valid pod, rendered on the host
  and unpacked by the launcher, gives the case's reviewed tree (the Python generator's) and logs the
  case's warnings;
- every case the generator refuses is refused on the host, with the generator's problems;
- whatever is missing or wrong on the fast path (no word, a bad word, no archive, a quoted command
  line, a file already in the output directory, a damaged archive) runs the Python generator, which
  renders the same units or, when the fast path left files behind, refuses every app (fail closed);
- `kvmpod args --pod-dir` renders, stores and names the archive; without --pod-dir nothing is written.
"""

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import UUID

from kvmpod.guest.generator import Arguments, generate
from kvmpod.guest.kmsg import Log
from kvmpod.host.cli import main as kvmpod_main
from kvmpod.guest.unitfile import GeneratedFile, GeneratedLink, UnsafeValue
from kvmpod.host.pods.prerendered_units import COMPLETE_TEXT, archive_of, directories_of, render_units, store_units
from kvmpod.pod.guest_paths import PRERENDERED_UNITS_DIR
from kvmpod.pod.problems import InvalidInput

REPO = Path(__file__).resolve().parents[3]
CASES = REPO / "tests/guest/generator_cases"
EXAMPLE_ROOT = REPO / "generator/kvmpod/examples/appc-pod/root"
LAUNCHER = "usr/lib/systemd/system-generators/kvmpod-generator"
UNPACKED = "kvmpod-generator: unpacked the units kvmpod rendered on the host"
MARK = ".kvmpod-prerendered"
REFUSAL = "50-kvmpod-invalid-manifest.conf"


def snapshot(directory: Path) -> dict[str, tuple[str, str, int]]:
    """Every entry below `directory`: {path: (kind, text or link target, mode)}; the archive's
    completion mark is checked and left out (systemd skips dot files)."""
    if (directory / MARK).exists():
        assert (directory / MARK).read_bytes() == COMPLETE_TEXT and stat.S_IMODE((directory / MARK).stat().st_mode) == 0o644
        (directory / MARK).unlink()
    tree = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(top) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                tree[str(path.relative_to(directory))] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                tree[str(path.relative_to(directory))] = ("dir", "", mode)
            else:
                tree[str(path.relative_to(directory))] = ("file", path.read_text(), mode)
    return tree


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("installed")
    subprocess.run([str(REPO / "packaging/install-tree"), str(dest)], check=True, stdout=subprocess.DEVNULL)
    return dest / LAUNCHER


def run_launcher(launcher: Path, *args: str) -> subprocess.CompletedProcess:
    # As systemd runs generators: umask 022, a small environment, the launcher exec'd by its #! line.
    return subprocess.run([str(launcher), *args], capture_output=True, text=True, cwd="/",
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, preexec_fn=lambda: os.umask(0o022),
                          timeout=60)


def guest_root(tmp_path: Path, source: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(source.resolve(), root, symlinks=True)
    return root


def cmdline_of(root: Path) -> str:
    path = root / "proc/cmdline"
    return path.read_text() if path.exists() else ""


def boot_with(root: Path, *words: str) -> None:
    """The kernel command line the guest will read: its own, then `words`."""
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cmdline").write_text(" ".join([cmdline_of(root).strip(), *words]).strip() + "\n")


def prerender(root: Path):
    units = render_units(str(root), cmdline_of(root))
    assert units is not None
    store_units(str(root), units)
    boot_with(root, units.cmdline_word)
    return units


def python_generator_tree(root: Path, tmp_path: Path, launcher: Path) -> tuple[dict, str]:
    out = tmp_path / "python-out"
    out.mkdir()
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0, result.stderr
    assert UNPACKED not in result.stderr
    return snapshot(out), result.stderr


def valid_cases() -> list[Path]:
    return [c for c in sorted(CASES.iterdir()) if c.is_dir() and not (c / "cmd").exists()
            and (c / "expected").is_dir() and not (c / "expected.exit").exists()]


def refused_cases() -> list[Path]:
    return [c for c in sorted(CASES.iterdir()) if c.is_dir() and not (c / "cmd").exists()
            and (c / "expected.exit").exists() and (c / "expected.exit").read_text().strip() != "0"]


# ---------------------------------------------------------------- the golden cases, both ways

@pytest.mark.parametrize("case", valid_cases(), ids=lambda p: p.name)
def test_unpacked_units_are_the_golden_tree(case: Path, tmp_path: Path, launcher: Path) -> None:
    root = guest_root(tmp_path, case / "root")
    python_tree, python_stderr = python_generator_tree(root, tmp_path, launcher)
    quoted = '"' in cmdline_of(root)
    prerender(root)
    out = tmp_path / "out"
    out.mkdir()
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    if quoted:  # the shell does not split quoted words as the kernel does: the Python generator runs
        assert lines.pop(0) == "kvmpod-generator: the kernel command line quotes a word: rendering the units here"
    else:
        assert lines.pop().startswith(UNPACKED), result.stderr
    # The warnings the guest logs are the Python generator's, line for line.
    expected_stderr = (case / "expected.stderr").read_text() if (case / "expected.stderr").exists() else ""
    assert "".join(f"{line}\n" for line in lines) == expected_stderr == python_stderr
    tree = snapshot(out)
    assert tree == python_tree  # kinds, texts, link targets and modes
    golden = {path: (kind, text) for path, (kind, text, _) in snapshot(case / "expected").items() if kind != "dir"}
    assert {path: (kind, text) for path, (kind, text, _) in tree.items() if kind != "dir"} == golden


@pytest.mark.parametrize("case", refused_cases(), ids=lambda p: p.name)
def test_a_pod_the_generator_refuses_is_refused_on_the_host(case: Path, tmp_path: Path) -> None:
    root = guest_root(tmp_path, case / "root")
    with pytest.raises(InvalidInput) as raised:
        render_units(str(root), cmdline_of(root))
    logged = (case / "expected.stderr").read_text()
    for problem in raised.value.problems:
        assert f"kvmpod-generator: {problem}" in logged  # the generator's own words
    assert not (root / PRERENDERED_UNITS_DIR.lstrip("/")).exists()


def test_no_manifest_means_nothing_to_render(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    assert render_units(str(tmp_path), "") is None


# ---------------------------------------------------------------- the archive

def test_archive_is_the_same_bytes_for_the_same_units_and_named_by_its_hash(tmp_path: Path) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    first, second = render_units(str(root), ""), render_units(str(root), "")
    assert first.archive == second.archive and first.sha256 == second.sha256
    path = store_units(str(root), first)
    assert Path(path).name == f"{first.sha256}.tar"
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == first.sha256
    assert sorted(p.name for p in Path(path).parent.iterdir()) == [
        f"{first.sha256}.{kind}" for kind in ("dirs", "tar", "warnings")]
    assert Path(path).with_suffix(".dirs").read_text() == "".join(f"{d}\n" for d in first.directories)
    assert "backup.service.requires" in first.directories
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert len(names) == len(set(names)), "a directory is in the archive once"
    for member in members:
        assert (member.uid, member.gid, member.mtime, member.uname, member.gname) == (0, 0, 0, "root", "root")
        parent = member.name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(member.name)  # a directory before its contents
        assert member.mode == {tarfile.DIRTYPE: 0o755, tarfile.REGTYPE: 0o644, tarfile.SYMTYPE: 0o777}[member.type]


def test_the_archive_is_never_written_through_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/kvmpod").symlink_to(outside)
    with pytest.raises(InvalidInput) as raised:
        store_units(str(root), render_units(str(root), ""))
    [problem] = raised.value.problems
    assert problem.field == "--rootfs"
    assert problem.message == (f"{root}/var/lib/kvmpod/units leads out of the root through a symlink; "
                               "make it a plain directory")
    assert list(outside.iterdir()) == []


def test_directories_come_parents_first_each_once() -> None:
    outputs = [GeneratedFile("a/b/c.conf", ""), GeneratedLink("a/b/d", "../x"), GeneratedFile("e.service", ""),
               GeneratedFile("a/f", "")]
    assert directories_of(outputs) == ["a", "a/b"]
    with tarfile.open(fileobj=io.BytesIO(archive_of(outputs))) as tar:
        assert [m.name for m in tar.getmembers()] == ["a", "a/b", "a/b/c.conf", "a/b/d", "a/f", "e.service", MARK]


def test_the_manifest_setting_is_named_as_the_kernel_command_line_names_it(tmp_path: Path) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    with pytest.raises(InvalidInput) as raised:
        render_units(str(root), "kvmpod.manifest=etc/kvmpod/pod.json")
    assert [p.field for p in raised.value.problems] == ["kvmpod.manifest"]


def test_a_value_no_unit_can_hold_is_an_input_problem_of_the_manifest(tmp_path: Path, monkeypatch) -> None:
    def unsafe(*args, **kwargs):
        raise UnsafeValue("What='x\\' ends in a backslash and cannot be written into a unit file")

    monkeypatch.setattr("kvmpod.host.pods.prerendered_units.plan_boot", unsafe)
    with pytest.raises(InvalidInput) as raised:
        render_units(str(tmp_path), "kvmpod.manifest=/srv/pod.json")
    assert [(p.field, p.message) for p in raised.value.problems] == [
        ("/srv/pod.json", "What='x\\' ends in a backslash and cannot be written into a unit file")]


def test_stored_files_and_their_directory_have_the_generators_modes(tmp_path: Path) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    old = os.umask(0)
    try:
        path = Path(store_units(str(root), render_units(str(root), "")))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()} == {0o644}


def test_a_failed_store_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    units = render_units(str(root), "")

    def replace(source, dest):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        store_units(str(root), units)
    assert list((root / PRERENDERED_UNITS_DIR.lstrip("/")).iterdir()) == []


def test_other_kernel_settings_give_other_units_and_another_name(tmp_path: Path) -> None:
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    ninep, virtiofs = render_units(str(root), ""), render_units(str(root), "kvmpod.share=virtiofs")
    assert ninep.sha256 != virtiofs.sha256
    with tarfile.open(fileobj=io.BytesIO(virtiofs.archive)) as tar:
        mount = tar.extractfile("mnt-dbvolume.mount").read().decode()
    assert "Type=virtiofs" in mount


def test_archive_of_the_generators_outputs_unpacks_to_what_it_writes(tmp_path: Path) -> None:
    outputs, status = generate(Arguments(None, True, None, str(EXAMPLE_ROOT), False), "",
                               Log("kvmpod-generator", use_kmsg=False, verbose=False))
    assert status == 0
    with tarfile.open(fileobj=io.BytesIO(archive_of(outputs))) as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
        assert tar.getmembers()[-1].name == MARK
    assert files.pop(MARK).encode() == COMPLETE_TEXT
    assert files == {o.path: o.content for o in outputs if hasattr(o, "content")}
    assert links == {o.path: o.target for o in outputs if hasattr(o, "target")}


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.service", "a/../../x", "a//b", "x/", "./x"])
def test_no_member_is_named_outside_the_directory(path: str) -> None:
    """The launcher unpacks with tar -P (links made at once), which keeps such names as they are."""
    with pytest.raises(ValueError, match="is not a path inside the generator's directory"):
        archive_of([GeneratedFile("ok.service", ""), GeneratedFile(path, "")])


# ---------------------------------------------------------------- the launcher's fast path and its fallbacks

@pytest.fixture
def example(tmp_path: Path, launcher: Path):
    root = guest_root(tmp_path, EXAMPLE_ROOT)
    golden, _ = python_generator_tree(root, tmp_path, launcher)
    units = render_units(str(root), "")
    store_units(str(root), units)
    out = tmp_path / "out"
    out.mkdir()
    return root, out, units, golden


def test_three_output_directories_as_systemd_passes_them(example, tmp_path: Path, launcher: Path) -> None:
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir(), late.mkdir()
    result = run_launcher(launcher, "--root", str(root), str(out), str(early), str(late))
    assert result.returncode == 0 and UNPACKED in result.stderr
    assert snapshot(out) == golden and snapshot(early) == {} and snapshot(late) == {}


def test_the_last_word_wins_as_in_systemd(example, launcher: Path) -> None:
    root, out, units, golden = example
    boot_with(root, "kvmpod.units=" + "0" * 64, units.cmdline_word)
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0 and UNPACKED in result.stderr
    assert snapshot(out) == golden


@pytest.mark.parametrize("word, logged", [
    (None, None),  # booted without --pod-dir: the Python generator, silently
    ("kvmpod.units=" + "a" * 63, "is not a SHA-256 in hex"),
    ("kvmpod.units=" + "A" * 64, "is not a SHA-256 in hex"),
    ("kvmpod.units=", "is not a SHA-256 in hex"),
    ("kvmpod.units=" + "b" * 64, "no /var/lib/kvmpod/units/" + "b" * 64 + ".tar"),
    ("kvmpod.units=$(touch${IFS}/tmp/kvmpod-pwned)", "is not a SHA-256 in hex"),
])
def test_without_a_usable_archive_the_python_generator_renders_the_units(example, launcher: Path, word, logged) -> None:
    root, out, units, golden = example
    if word is not None:
        boot_with(root, word)
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0, result.stderr
    assert UNPACKED not in result.stderr
    assert result.stderr == ("" if logged is None else result.stderr)
    if logged is not None:
        assert logged in result.stderr and "rendering the units here" in result.stderr
    assert snapshot(out) == golden
    assert not os.path.exists("/tmp/kvmpod-pwned")


def test_a_quoted_command_line_goes_to_the_python_generator(example, launcher: Path) -> None:
    root, out, units, golden = example
    # The kernel and systemd group quoted words; the shell would not, so it does not guess.
    boot_with(root, f'foo="a {units.cmdline_word}"')
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0 and UNPACKED not in result.stderr
    assert snapshot(out) == golden


def test_a_symlink_where_a_directory_goes_is_not_followed(example, tmp_path: Path, launcher: Path) -> None:
    """tar -k would write through it; the launcher leaves it to the Python generator, whose
    O_NOFOLLOW refuses it: every app is refused and nothing is written where the link points."""
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "backup.service.requires").symlink_to(elsewhere)
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 1, result.stderr
    assert f"{out}/backup.service.requires is a symbolic link: rendering the units here" in result.stderr
    assert list(elsewhere.iterdir()) == []
    for app in ("backup", "reduce-worker"):
        assert (out / f"{app}.service.d" / REFUSAL).is_file(), sorted(snapshot(out))


def test_an_archive_without_its_list_of_directories_is_not_unpacked(example, launcher: Path) -> None:
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    (root / PRERENDERED_UNITS_DIR.lstrip("/") / f"{units.sha256}.dirs").unlink()
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0 and f"no {PRERENDERED_UNITS_DIR}/{units.sha256}.dirs" in result.stderr
    assert snapshot(out) == golden


def test_a_file_already_in_the_output_directory_fails_closed(example, launcher: Path) -> None:
    """tar -k refuses to overwrite it, as the Python generator's O_EXCL does; the Python generator
    then meets the files tar did unpack and refuses every app: none starts with half its units."""
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    (out / "mnt-dbvolume.mount").write_text("another generator's unit\n")
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 1, result.stderr
    assert "failed (tar exit 2): rendering the units here" in result.stderr
    assert (out / "mnt-dbvolume.mount").read_text() == "another generator's unit\n"
    for app in ("backup", "reduce-worker"):
        assert (out / f"{app}.service.d" / REFUSAL).is_file(), sorted(snapshot(out))


def _member_offsets(archive: bytes) -> dict[str, tuple[int, int, int]]:
    """{name: (header offset, data offset, size)}: where a cut falls."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: (m.offset, m.offset_data, m.size) for m in tar.getmembers()}


@pytest.mark.parametrize("cut, logged", [
    # inside a unit's text: tar says so
    (lambda offsets: offsets["mnt-dbvolume.mount"][1] + 100, "failed (tar exit 2)"),
    # at a member's header, a block boundary: tar takes the rest for the archive's end, and says nothing
    (lambda offsets: offsets["mnt-dbvolume.mount"][0], "is cut short (no .kvmpod-prerendered at its end)"),
    (lambda offsets: offsets[MARK][0], "is cut short (no .kvmpod-prerendered at its end)"),  # only the mark lost
])
def test_a_cut_archive_fails_closed(example, launcher: Path, cut, logged) -> None:
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    archive = root / PRERENDERED_UNITS_DIR.lstrip("/") / f"{units.sha256}.tar"
    archive.write_bytes(units.archive[:cut(_member_offsets(units.archive))])
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 1 and logged in result.stderr, result.stderr
    for app in ("backup", "reduce-worker"):
        assert (out / f"{app}.service.d" / REFUSAL).is_file(), sorted(snapshot(out))


def test_an_unreadable_archive_renders_the_units_in_python(example, launcher: Path) -> None:
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    archive = root / PRERENDERED_UNITS_DIR.lstrip("/") / f"{units.sha256}.tar"
    archive.unlink()
    archive.mkdir()  # not a regular file
    result = run_launcher(launcher, "--root", str(root), str(out))
    assert result.returncode == 0 and UNPACKED not in result.stderr
    assert snapshot(out) == golden


def test_other_arguments_reach_the_python_generator(example, launcher: Path) -> None:
    root, out, units, golden = example
    boot_with(root, units.cmdline_word)
    result = run_launcher(launcher, "--dry-run", "--root", str(root))
    assert result.returncode == 0 and "==> mnt-dbvolume.mount <==" in result.stdout
    result = run_launcher(launcher, "--root", str(root), str(out), str(out))  # two directories: a usage error
    assert result.returncode == 2 and "give one output directory or three" in result.stderr


def test_warnings_are_logged_again_at_boot(tmp_path: Path, launcher: Path) -> None:
    root = guest_root(tmp_path, CASES / "app-isolators/root")
    units = prerender(root)
    assert units.warnings, "app-isolators has an unknown isolator: a warning"
    warnings = (root / PRERENDERED_UNITS_DIR.lstrip("/") / f"{units.sha256}.warnings").read_text()
    assert warnings == "".join(f"{w}\n" for w in units.warnings)
    out = tmp_path / "out"
    out.mkdir()
    result = run_launcher(launcher, "--root", str(root), str(out))
    for warning in units.warnings:
        assert f"kvmpod-generator: {warning.splitlines()[0]}\n" in result.stderr


# ---------------------------------------------------------------- kvmpod args --pod-dir

@pytest.fixture
def pod(tmp_path: Path):
    rootfs = guest_root(tmp_path, EXAMPLE_ROOT)
    (rootfs / "vmlinuz").write_bytes(b"")
    manifest = json.loads((rootfs / "etc/kvmpod/pod.json").read_text())
    for volume in manifest["volumes"]:
        if volume["kind"] == "host":
            volume["source"] = str(tmp_path / "volumes" / volume["name"])
            os.makedirs(volume["source"])
    (rootfs / "etc/kvmpod/pod.json").write_text(json.dumps(manifest))
    (tmp_path / "pod.json").write_text(json.dumps(manifest))
    pod_dir = tmp_path / "pod"
    (pod_dir / "share").mkdir(parents=True)
    return tmp_path, rootfs, pod_dir


def kvmpod_args(capsys, tmp_path: Path, rootfs: Path, *extra: str) -> list[str]:
    status = kvmpod_main(["args", "--hypervisor", "qemu", "--manifest", str(tmp_path / "pod.json"),
                          "--rootfs", str(rootfs), "--uuid", UUID, "--accel", "tcg", "--format", "json",
                          "--security-model", "none", *extra])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def test_args_with_pod_dir_renders_stores_and_names_the_archive(pod, capsys, monkeypatch) -> None:
    monkeypatch.setattr("kvmpod.host.pods.pod_dirs.QMP_DIR", str(pod[0] / "qmp"))
    tmp_path, rootfs, pod_dir = pod
    argv = kvmpod_args(capsys, tmp_path, rootfs, "--pod-dir", str(pod_dir))
    params = argv[argv.index("-append") + 1].split()
    words = [w for w in params if w.startswith("kvmpod.units=")]
    assert len(words) == 1
    sha = words[0].removeprefix("kvmpod.units=")
    archive = rootfs / PRERENDERED_UNITS_DIR.lstrip("/") / f"{sha}.tar"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha
    # What the guest will unpack is what the generator renders with that very command line.
    expected = render_units(str(rootfs), " ".join(p for p in params if p != words[0]))
    assert expected.sha256 == sha
    # The same pod, the same argv; a changed pod, another archive.
    assert kvmpod_args(capsys, tmp_path, rootfs, "--pod-dir", str(pod_dir)) == argv
    manifest = json.loads((rootfs / "etc/kvmpod/pod.json").read_text())
    manifest["apps"][0]["app"]["exec"].append("--changed")
    (rootfs / "etc/kvmpod/pod.json").write_text(json.dumps(manifest))
    changed = kvmpod_args(capsys, tmp_path, rootfs, "--pod-dir", str(pod_dir))
    assert [w for w in changed if "kvmpod.units=" in w] != [w for w in argv if "kvmpod.units=" in w]


def test_args_without_pod_dir_writes_nothing_and_names_no_archive(pod, capsys) -> None:
    tmp_path, rootfs, _ = pod
    argv = kvmpod_args(capsys, tmp_path, rootfs)
    assert not any("kvmpod.units=" in a for a in argv)
    assert not (rootfs / PRERENDERED_UNITS_DIR.lstrip("/")).exists()


def test_args_prerender_without_pod_dir(pod, capsys) -> None:
    """A launcher that boots its own guests (no kvmpod run) asks for it with --prerender."""
    tmp_path, rootfs, _ = pod
    argv = kvmpod_args(capsys, tmp_path, rootfs, "--prerender")
    [word] = [w for w in argv[argv.index("-append") + 1].split() if w.startswith("kvmpod.units=")]
    sha = word.removeprefix("kvmpod.units=")
    assert (rootfs / PRERENDERED_UNITS_DIR.lstrip("/") / f"{sha}.tar").is_file()
    assert "kvmpod.pod_share=" not in argv[argv.index("-append") + 1]  # no pod directory: no pod lifecycle


def test_args_prerender_refuses_a_pod_the_generator_would_refuse(pod, capsys) -> None:
    tmp_path, rootfs, _ = pod
    manifest = json.loads((rootfs / "etc/kvmpod/pod.json").read_text())
    manifest["apps"][0]["app"]["exec"] = ["no-such-program"]
    (rootfs / "etc/kvmpod/pod.json").write_text(json.dumps(manifest))
    status = kvmpod_main(["args", "--hypervisor", "qemu", "--manifest", str(tmp_path / "pod.json"), "--rootfs",
                          str(rootfs), "--uuid", UUID, "--accel", "tcg", "--security-model", "none", "--prerender"])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.startswith("kvmpod: apps[0].app.exec[0]: 'no-such-program' is not an executable file"), err
    assert not (rootfs / PRERENDERED_UNITS_DIR.lstrip("/")).exists()
