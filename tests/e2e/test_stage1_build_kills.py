"""Issue 22: `kvmpod stage1 build` killed at its steps, and a built entry damaged afterwards, for real.

A private cache (KVMPOD_E2E_CACHE) holds a hard-linked copy of the shared base (never written: the
steps below only remove files of the copy, or damage files the stage1 build itself wrote), and the
real builder makes this checkout's stage1 in it (a copy of the base, the .deb installed: seconds,
no debootstrap, no boot). What is checked:

- killed while it copies the base, and killed while it installs kvmpod: no entry appears (only its
  `.tmp-*` directory, listed as unfinished), nothing of the build goes on running (its copy dies
  with it), and the next build makes a whole entry;
- a built entry damaged (its kernel truncated, a file of its root removed, its completion mark
  removed): `kvmpod stage1 list` says so and why, the next use (`kvmpod stage1 build`, the same check
  `kvmpod run` makes) never returns it: it is moved aside and built again; `kvmpod stage1 gc` removes
  what was set aside and what the killed builds left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmpod.host.images import stage1, stage1_cache

from .kvmpod_guest import GENERATOR_SRC, HOST_NETWORK_SAFE, processes_naming

pytestmark = pytest.mark.e2e


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, **HOST_NETWORK_SAFE, "PYTHONPATH": str(GENERATOR_SRC), "KVMPOD_E2E_CACHE": str(cache)}


def _kvmpod(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], env=_env(cache), capture_output=True,
                          text=True, timeout=600)


def _build_killed_at(cache: Path, step: str, delay: float) -> tuple[list[str], list[str]]:
    """Start `kvmpod stage1 build`, SIGKILL it `delay` s after it says it began `step`; (its stderr
    lines, the processes of the build still alive half a second later)."""
    proc = subprocess.Popen([sys.executable, "-m", "kvmpod.host.cli", "stage1", "build"], env=_env(cache),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith(f"kvmpod stage1: {step}") and line.rstrip().endswith("..."):
                time.sleep(delay)
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.5)
    left = processes_naming(str(cache))
    return lines, left


def _names(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    base = stage1.ensure_image()  # the shared base (built once per machine; cached)
    cache = Path("/var/tmp") / f"kvmpod-e2e-stage1-kills-{os.getpid()}"
    cache.mkdir()
    entry = cache / base.root.parent.name
    subprocess.run(["cp", "-al", str(base.root.parent), str(entry)], check=True)
    (entry / stage1_cache.LAST_USED).unlink(missing_ok=True)  # a link to the shared one: not touched here
    yield cache
    subprocess.run(["rm", "-rf", "--one-file-system", str(cache)], check=False)


def test_a_build_killed_at_any_step_leaves_no_entry_and_the_next_build_makes_a_whole_one(cache: Path) -> None:
    for step, delay in (("copy the base image", 0.3), ("install kvmpod", 0.0)):
        lines, left = _build_killed_at(cache, step, delay)
        assert any(ln.startswith(f"kvmpod stage1: {step}") for ln in lines), lines
        assert left == [], f"killed at '{step}', still running: {left}"
        names = _names(cache)
        assert not [n for n in names if n.startswith("stage1-")], (step, names)
    unfinished = [n for n in _names(cache) if n.startswith(".tmp-stage1-")]
    assert len(unfinished) == 2, _names(cache)
    listed = _kvmpod(cache, "stage1", "list").stdout
    assert all(re.search(rf"^{n}\s+unfinished\s", listed, re.M) for n in unfinished), listed
    built = _kvmpod(cache, "stage1", "build")
    assert built.returncode == 0, built.stderr
    entry = Path(built.stdout.strip())
    assert entry.parent == cache and entry.name.startswith("stage1-") and stage1_cache.problem(entry) is None
    assert (entry / "root/usr/bin/kvmpod").is_file() and (entry / stage1_cache.CONTENTS).is_file()


@pytest.mark.parametrize("damage, why", [
    ("truncate vmlinuz", "vmlinuz changed since it was built"),
    ("remove root/usr/bin/kvmpod", "root/usr/bin/kvmpod is missing"),
    ("remove build-info.json", "its build never finished (no build-info.json)"),
])
def test_a_damaged_entry_is_never_used_it_is_set_aside_and_built_again(cache: Path, damage: str, why: str) -> None:
    built = _kvmpod(cache, "stage1", "build")
    assert built.returncode == 0, built.stderr
    entry = Path(built.stdout.strip())
    verb, what = damage.split(" ", 1)
    if verb == "truncate":
        with open(entry / what, "r+b") as f:  # written by the stage1 build: no link to the shared base
            f.truncate(1000)
    else:
        (entry / what).unlink()
    listed = _kvmpod(cache, "stage1", "list").stdout
    assert re.search(rf"^{entry.name}\s+stage1\s+damaged: {re.escape(why)}", listed, re.M), listed
    again = _kvmpod(cache, "stage1", "build")
    assert again.returncode == 0, again.stderr
    assert re.search(rf"kvmpod stage1: {re.escape(str(entry))} is damaged: {re.escape(why)}[^;\n]*; moved to "
                     rf"\.damaged-{entry.name}-\d+ \(kvmpod stage1 gc removes it\) and built again", again.stderr), \
        again.stderr
    assert Path(again.stdout.strip()) == entry and stage1_cache.problem(entry) is None  # built again, whole
    assert (entry / "vmlinuz").stat().st_size > 1_000_000


def test_gc_removes_what_was_set_aside_and_what_killed_builds_left(cache: Path) -> None:
    before = _names(cache)
    assert [n for n in before if n.startswith(".damaged-")], before
    removed = _kvmpod(cache, "stage1", "gc", "--older-than", "0s")
    assert removed.returncode == 0, removed.stderr
    after = _names(cache)
    assert not [n for n in after if n.startswith((".damaged-", ".tmp-"))], (removed.stdout, after)
    assert [n for n in after if n.startswith("stage1-")], after  # the newest stays
