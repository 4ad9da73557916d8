"""Issue 22: the stage1 cache never hands out a half-built or damaged entry, and old entries are listed
and collected (host.images.stage1_cache, its use in stage1.ensure_stage1, kvmpod stage1 list/gc). Fake
entries with the real layout; the builds themselves are stubbed where they would debootstrap."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmpod.host.images import stage1, stage1_cache

REPO = Path(__file__).resolve().parents[3]


def make_entry(cache: Path, name: str, base: str | None = None, built: float | None = None) -> Path:
    """An entry as a build leaves it: root/ with the sentinels, boot files, contents.json, the mark last."""
    tmp = cache / f".tmp-{name}-1"
    for sentinel in ("usr/lib/systemd/systemd", "etc/os-release", "usr/bin/kvmpod"):
        (tmp / "root" / sentinel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "root" / sentinel).write_text(sentinel)
    (tmp / "root/var/lib").mkdir(parents=True)
    (tmp / "vmlinuz").write_bytes(b"k" * 1000)
    (tmp / "initrd.img").write_bytes(b"i" * 500)
    stage1_cache.write_contents(tmp)
    (tmp / "build-info.json").write_text(json.dumps({"base": base} if base else {}))
    os.rename(tmp, cache / name)
    if built is not None:
        os.utime(cache / name / "build-info.json", (built, built))
    return cache / name


@pytest.mark.parametrize("damage,words", [
    ("no-mark", "its build never finished"),
    ("kernel-removed", "vmlinuz is missing"),
    ("kernel-truncated", "vmlinuz changed since it was built (size 10, built 1000)"),
    ("initrd-rewritten", "initrd.img changed since it was built"),
    ("sentinel-removed", "root/usr/lib/systemd/systemd is missing"),
    ("root-entry-removed", "root/ lost or gained top-level entries"),
    ("contents-garbage", "contents.json is unreadable"),
])
def test_a_damaged_entry_is_detected(tmp_path: Path, damage: str, words: str):
    entry = make_entry(tmp_path, "stage1-aaaa")
    assert stage1_cache.problem(entry) is None
    if damage == "no-mark":
        (entry / "build-info.json").unlink()
    elif damage == "kernel-removed":
        (entry / "vmlinuz").unlink()
    elif damage == "kernel-truncated":
        os.truncate(entry / "vmlinuz", 10)
    elif damage == "initrd-rewritten":
        time.sleep(0.01)
        (entry / "initrd.img").write_bytes(b"j" * 500)
    elif damage == "sentinel-removed":
        (entry / "root/usr/lib/systemd/systemd").unlink()
    elif damage == "root-entry-removed":
        (entry / "root/var/lib").rmdir()
    else:
        (entry / "contents.json").write_text("{")
    assert words in stage1_cache.problem(entry)


def test_ensure_stage1_rebuilds_a_damaged_entry_and_never_returns_it(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(stage1, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(stage1, "PROGRESS", False)
    monkeypatch.setattr(stage1.os, "geteuid", lambda: 0)
    base = make_entry(tmp_path, stage1.recipe_hash())
    deb = tmp_path / "kvmpod.deb"
    deb.write_bytes(b"deb")
    name = f"stage1-{stage1.stage1_hash(base.name, deb)}"
    builds = []

    def build_stage1(base_image, entry, deb_file):  # stands in for the real copy + dpkg -i
        builds.append(entry.name)
        make_entry(entry.parent, entry.name, base=base.name)

    monkeypatch.setattr(stage1, "_build_stage1", build_stage1)
    first = stage1.ensure_stage1(deb)
    assert builds == [name] and stage1_cache.problem(first.root.parent) is None
    assert stage1.ensure_stage1(deb) == first and builds == [name]  # whole: used as it is

    os.truncate(first.vmlinuz, 3)  # damaged afterwards
    again = stage1.ensure_stage1(deb)

    assert builds == [name, name] and again == first and stage1_cache.problem(again.root.parent) is None
    assert "is damaged: vmlinuz changed since it was built" in capsys.readouterr().err
    asides = [p.name for p in tmp_path.iterdir() if p.name.startswith(".damaged-")]
    assert asides == [f".damaged-{name}-{os.getpid()}"]


def test_a_killed_build_leaves_only_its_temp_dir_and_the_next_build_replaces_it(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(stage1, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr(stage1, "PROGRESS", False)
    monkeypatch.setattr(stage1.os, "geteuid", lambda: 0)
    killed = tmp_path / f".tmp-{stage1.recipe_hash()}-99999"
    (killed / "root/usr").mkdir(parents=True)  # what debootstrap left when it was killed
    calls = []

    def build(entry):
        calls.append(sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")))
        make_entry(entry.parent, entry.name)
        return 1.0

    monkeypatch.setattr(stage1, "_build", build)
    image = stage1.ensure_image()
    assert calls == [[]]  # the killed build's tree was removed first, under the lock
    assert stage1_cache.problem(image.root.parent) is None


def test_gc_keeps_the_newest_the_ones_in_use_and_the_recently_used(tmp_path: Path):
    now = time.time()
    base_old = make_entry(tmp_path, "0123456789abcdef", built=now - 9000)
    base_new = make_entry(tmp_path, "fedcba9876543210", built=now - 8000)
    old = make_entry(tmp_path, "stage1-old", base=base_old.name, built=now - 7000)
    used = make_entry(tmp_path, "stage1-used", base=base_old.name, built=now - 6000)
    recent = make_entry(tmp_path, "stage1-recent", base=base_new.name, built=now - 5000)
    newest = make_entry(tmp_path, "stage1-newest", base=base_new.name, built=now - 4000)
    for entry in (old, used, recent, newest):
        os.utime(entry / "build-info.json", (now - 9000, now - 9000)) if entry is old else None
    stage1_cache.mark_used(recent)
    (tmp_path / ".tmp-stage1-killed-1").mkdir()
    os.utime(tmp_path / ".tmp-stage1-killed-1", (now - 9000, now - 9000))
    (tmp_path / ".damaged-stage1-x-1").mkdir()
    (tmp_path / "systemd-host-1234").mkdir()  # not kvmpod's: never touched
    pods = [(True, {"stage1": str(used / "root")}), (False, {"stage1": str(old / "root")})]

    plan = stage1_cache.plan_gc(stage1_cache.entries(tmp_path), stage1_cache.in_use(tmp_path, pods), 3600, now)

    assert sorted(e.name for e in plan) == [".damaged-stage1-x-1", ".tmp-stage1-killed-1", "stage1-old"]
    for e in plan:
        stage1_cache.remove_entry(e.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0123456789abcdef", "fedcba9876543210", "stage1-newest", "stage1-recent", "stage1-used", "systemd-host-1234"]


def test_kvmpod_stage1_list_and_gc(tmp_path: Path):
    cache, pods = tmp_path / "cache", tmp_path / "pods"
    cache.mkdir()
    now = time.time()
    make_entry(cache, "stage1-old", built=now - 9000)
    make_entry(cache, "stage1-new", built=now - 10)
    os.truncate(cache / "stage1-new/initrd.img", 1)
    os.utime(cache / "stage1-new/build-info.json", (now - 10, now - 10))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_E2E_CACHE=str(cache), KVMPOD_PODS_DIR=str(pods))

    def kvmpod(*args):
        return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "stage1", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    listing = kvmpod("list").stdout
    assert "stage1-old  stage1  ok" in listing
    assert "stage1-new  stage1  damaged: initrd.img changed since it was built" in listing
    assert kvmpod("gc", "--older-than", "0s").stdout == "removed stage1-new (stage1)\n"  # damaged: not kept
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "stage1-old"]
    assert kvmpod("gc", "--older-than", "soon").returncode == 2
