"""Golden cases for kvmpod-generator, in zram-generator's shape: one directory per case.

tests/generator_cases/<case>/
  root/             the guest root the generator reads (--root); may be a symlink to an example
  cmd               optional: the arguments, {root} and {out} substituted (default: --root {root} {out})
  expected/         the exact tree it must write (absent: it must write nothing)
  expected.stdout   optional: exact standard output (dry runs)
  expected.stderr   optional: exact standard error (absent: it must print nothing)
  expected.exit     optional: exit status (default 0)

Set KVMPOD_UPDATE_GOLDEN=1 to rewrite the expectations from what the generator does now; then
read the diff: a golden file is only as good as the review it got. A run with it set always fails
(every case it rewrote), so it can never pass CI; `.ci/run` refuses it outright.
"""

import os
import shutil
from pathlib import Path

import pytest

from kvmpod.guest.generator import main

CASES = Path(__file__).parent / "generator_cases"
CASE_DIRS = sorted(p for p in CASES.iterdir() if p.is_dir())
UPDATE = os.environ.get("KVMPOD_UPDATE_GOLDEN") == "1"
FAKE_ROOT = "/guest"
FAKE_CASE = "/case"
OUT = "/run/systemd/generator"


def snapshot(directory: str) -> dict[str, tuple[str, str]]:
    """Every file and link below `directory`: {relative path: ("file", text) | ("link", target)}."""
    tree = {}
    for top, dirs, files in os.walk(directory):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                tree[rel] = ("link", os.readlink(path))
            else:
                with open(path, encoding="utf-8") as f:
                    tree[rel] = ("file", f.read())
    return tree


def read_optional(path: str, default: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return default


def run_case(case: Path, fs) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run the generator on `case` in a fake filesystem: its exit status and the tree it wrote."""
    fs.add_real_directory((case / "root").resolve(), target_path=FAKE_ROOT)
    fs.add_real_directory(case, target_path=FAKE_CASE)
    fs.create_dir(OUT)
    cmd = read_optional(f"{FAKE_CASE}/cmd", "--root {root} {out}").split()
    argv = [word.format(root=FAKE_ROOT, out=OUT) for word in cmd]
    status = main(argv)
    return status, snapshot(OUT)


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda p: p.name)
def test_generator_case(case: Path, fs, capsys):
    status, actual = run_case(case, fs)

    captured = capsys.readouterr()
    if UPDATE:
        _update_golden(fs, case, actual, status, captured.out, captured.err)
        pytest.fail("KVMPOD_UPDATE_GOLDEN=1: golden files rewritten from the code under test, so this run "
                    "checked nothing; review the diff, then run again without it")
    assert captured.err == read_optional(f"{FAKE_CASE}/expected.stderr", "")
    assert captured.out == read_optional(f"{FAKE_CASE}/expected.stdout", "")
    assert status == int(read_optional(f"{FAKE_CASE}/expected.exit", "0"))
    expected = snapshot(f"{FAKE_CASE}/expected") if os.path.isdir(f"{FAKE_CASE}/expected") else {}
    assert sorted(actual) == sorted(expected)
    for path in expected:
        assert actual[path] == expected[path], path


def _update_golden(fs, case: Path, tree, status, out, err) -> None:
    fs.pause()
    try:
        shutil.rmtree(case / "expected", ignore_errors=True)
        for rel, (kind, value) in tree.items():
            path = case / "expected" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "link":
                path.symlink_to(value)
            else:
                path.write_text(value, encoding="utf-8")
        for name, text, default in (("expected.stdout", out, ""), ("expected.stderr", err, ""),
                                    ("expected.exit", f"{status}\n", "0\n")):
            if text == default:
                (case / name).unlink(missing_ok=True)
            else:
                (case / name).write_text(text, encoding="utf-8")
    finally:
        fs.resume()
