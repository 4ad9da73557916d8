"""The stage1 layer's masks and disabled generators (issue 20)."""

import os
from pathlib import Path

import pytest

from kvmpod.host.images import stage1, stage1_trim


def test_trim_masks_each_unit_and_disables_each_generator(tmp_path: Path) -> None:
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "fstrim.timer").write_text("[Timer]\n")  # a unit file already there is replaced
    stage1_trim.trim(tmp_path)
    for unit in stage1_trim.MASKED:
        assert os.readlink(unit_dir / unit) == "/dev/null", unit
    for generator in stage1_trim.DISABLED_GENERATORS:
        assert os.readlink(tmp_path / "etc/systemd/system-generators" / generator) == "/dev/null", generator
    stage1_trim.trim(tmp_path)  # again: idempotent
    assert os.readlink(unit_dir / "fstrim.timer") == "/dev/null"


def test_nothing_the_pod_needs_is_masked() -> None:
    kept = {"systemd-logind.service", "dbus.service", "dbus.socket", "systemd-udevd.service",
            "systemd-udev-trigger.service", "systemd-journald.service", "systemd-journal-flush.service",
            "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service", "dev-mqueue.mount"}
    assert not kept & set(stage1_trim.MASKED)
    assert "systemd-fstab-generator" not in stage1_trim.DISABLED_GENERATORS
    assert "kvmpod-generator" not in stage1_trim.DISABLED_GENERATORS


def test_each_masked_unit_and_generator_exists_in_the_cached_base() -> None:
    """A misspelt name masks nothing: check the names against a built base image, when there is one."""
    bases = [p for p in stage1.CACHE_ROOT.glob("*/root") if not p.parent.name.startswith(("stage1-", "."))
             and (p / "usr/lib/systemd/system/systemd-journald.service").exists()]
    if not bases:
        pytest.skip(f"no base image in {stage1.CACHE_ROOT}")
    root = bases[0]
    units = root / "usr/lib/systemd/system"
    for unit in stage1_trim.MASKED:
        template = unit.split("@", 1)[0] + "@.service" if "@" in unit else unit
        assert (units / unit).exists() or (units / template).exists(), unit
    for generator in stage1_trim.DISABLED_GENERATORS:
        assert (root / "usr/lib/systemd/system-generators" / generator).exists(), generator


def test_the_trim_is_part_of_the_stage1_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = tmp_path / "k.deb"
    deb.write_bytes(b"deb")
    before = stage1.stage1_hash("base", deb)
    monkeypatch.setattr(stage1_trim, "MASKED", {**stage1_trim.MASKED, "x.service": "y"})
    import inspect
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("#changed" if obj is stage1_trim else ""))
    assert stage1.stage1_hash("base", deb) != before
