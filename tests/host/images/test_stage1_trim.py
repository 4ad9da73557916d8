"""The stage1 layer's masks and disabled generators (issue 20)."""

import os
from pathlib import Path

import pytest

from kvmpod.host.images import stage1, stage1_trim


FLUSH = """[Unit]
Description=Flush Journal to Persistent Storage
After=systemd-journald.service systemd-remount-fs.service
Before=systemd-tmpfiles-setup.service
RequiresMountsFor=/var/log/journal

[Service]
ExecStart=journalctl --flush
"""


def _shipped(root: Path) -> None:
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd/system/systemd-journal-flush.service").write_text(FLUSH)


def test_trim_masks_each_unit_and_disables_each_generator(tmp_path: Path) -> None:
    _shipped(tmp_path)
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
    """logind is masked since issue 20's fourth round: stops reach systemd by Ctrl-Alt-Del (hypervisor/guest_stop.py)."""
    kept = {"dbus.service", "dbus.socket", "systemd-udevd.service",
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


def _udev_loads(rules: str, modalias: str) -> bool:
    """Whether the rules' kmod line matches MODALIAS (udev's globs: fnmatch, '|' between alternatives)."""
    import fnmatch
    import re

    [line] = [ln for ln in rules.splitlines() if "kmod load" in ln]
    pattern = re.search(r'ENV\{MODALIAS\}=="([^"]*)"', line).group(1)
    return any(fnmatch.fnmatchcase(modalias, alternative) for alternative in pattern.split("|"))


def test_udev_loads_modules_only_for_what_a_pod_uses(tmp_path: Path) -> None:
    _shipped(tmp_path)
    stage1_trim.trim(tmp_path)
    rules = (tmp_path / stage1_trim.UDEV_DRIVERS_RULES).read_text()
    # the modaliases a booted q35 pod showed (udevadm info), each with what it loads
    wanted = {"virtio:d00000001v00001AF4": "virtio_net", "virtio:d00000003v00001AF4": "virtio_console",
              "acpi:LNXPWRBN:": "button", "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw": "evdev"}
    unwanted = {"cpu:type:x86,ven0002fam0017mod0001:feature:,0000,0058": "kvm_amd",
                "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01": "ahci",
                "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00": "lpc_ich",
                "platform:pcspkr": "pcspkr", "serio:ty01pr00id00ex00": "psmouse", "acpi:QEMU0002:": "qemu_fw_cfg"}
    for modalias, module in wanted.items():
        assert _udev_loads(rules, modalias), module
    for modalias, module in unwanted.items():
        assert not _udev_loads(rules, modalias), module
    assert rules.splitlines()[1] == 'ACTION!="add", GOTO="drivers_end"'


def test_the_drivers_rules_replace_the_bases_by_name() -> None:
    """udev reads /etc/udev/rules.d/NAME instead of /usr/lib/udev/rules.d/NAME: the names must match."""
    bases = [p for p in stage1.CACHE_ROOT.glob("*/root") if not p.parent.name.startswith(("stage1-", "."))
             and (p / "usr/lib/udev/rules.d").is_dir()]
    if not bases:
        pytest.skip(f"no base image in {stage1.CACHE_ROOT}")
    name = Path(stage1_trim.UDEV_DRIVERS_RULES).name
    assert (bases[0] / "usr/lib/udev/rules.d" / name).is_file()
    assert stage1_trim.UDEV_DRIVERS_RULES.startswith("etc/udev/rules.d/")


def test_the_units_that_mounted_credentials_get_none(tmp_path: Path) -> None:
    _shipped(tmp_path)
    stage1_trim.trim(tmp_path)
    for unit in stage1_trim.NO_CREDENTIALS_UNITS:
        dropin = tmp_path / "etc/systemd/system" / f"{unit}.d" / stage1_trim.NO_CREDENTIALS_DROPIN
        assert "[Service]\nLoadCredential=\n" in dropin.read_text(), unit


def test_the_journal_is_volatile_and_flushed_only_when_a_kept_pod_makes_it_persistent(tmp_path: Path) -> None:
    """issue 20: no /var/log/journal in the stage1 (journald's Storage=auto then stays in RAM), and the
    flush unit runs only where it exists (a kept pod: pods/kept_journal.py)."""
    _shipped(tmp_path)
    journal = tmp_path / "var/log/journal"
    (journal / "6b766d706f6465326574657374303031").mkdir(parents=True)  # as a base boot would leave it
    (journal / "6b766d706f6465326574657374303031/system.journal").write_bytes(b"LPKSHHRH")
    (tmp_path / "var/log/dpkg.log").write_text("kept\n")
    stage1_trim.trim(tmp_path)
    assert not journal.exists() and not journal.is_symlink()
    assert (tmp_path / "var/log/dpkg.log").read_text() == "kept\n"  # only the journal's directory goes
    dropin = tmp_path / "etc/systemd/system/systemd-journal-flush.service.d" / stage1_trim.FLUSH_DROPIN
    lines = [ln for ln in dropin.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["[Unit]", "ConditionPathIsDirectory=/var/log/journal"]
    from kvmpod.host.pods import kept_journal

    assert "/" + kept_journal.JOURNAL_DIR == "/" + stage1_trim.VOLATILE_JOURNAL == "/var/log/journal"
    journal.symlink_to("/elsewhere")  # whatever is there goes, a link is not followed
    stage1_trim.trim(tmp_path)
    assert not journal.is_symlink()


def test_journald_in_the_cached_base_stores_persistently_only_where_the_directory_is() -> None:
    """The stage1's volatile journal rests on journald's default Storage=auto: no journald.conf of the
    base (nor the stage1's drop-in) sets Storage=, and Debian's flush unit has no condition of its own
    that the drop-in would have to override."""
    bases = [p for p in stage1.CACHE_ROOT.glob("*/root") if not p.parent.name.startswith(("stage1-", "."))
             and (p / "usr/lib/systemd/system/systemd-journal-flush.service").exists()]
    if not bases:
        pytest.skip(f"no base image in {stage1.CACHE_ROOT}")
    root = bases[0]
    confs = [root / "etc/systemd/journald.conf", *sorted((root / "etc/systemd/journald.conf.d").glob("*.conf")),
             *sorted((root / "usr/lib/systemd/journald.conf.d").glob("*.conf"))]
    for conf in [c for c in confs if c.is_file()]:
        assert not [ln for ln in conf.read_text().splitlines() if ln.strip().startswith("Storage=")], conf
    assert "Storage=" not in stage1.JOURNALD_SETTINGS
    flush = (root / "usr/lib/systemd/system/systemd-journal-flush.service").read_text()
    assert "ExecStart=journalctl --flush" in flush and "ConditionPathIsDirectory" not in flush


def test_ctrl_alt_del_powers_a_pod_off(tmp_path: Path) -> None:
    """Debian links ctrl-alt-del.target to reboot.target in /lib; the stage1's /etc link, which systemd
    reads first, makes it poweroff.target (a stop comes by Ctrl-Alt-Del since logind is masked)."""
    _shipped(tmp_path)
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "ctrl-alt-del.target").symlink_to("/lib/systemd/system/reboot.target")
    stage1_trim.trim(tmp_path)
    stage1_trim.trim(tmp_path)  # again: idempotent
    assert os.readlink(unit_dir / "ctrl-alt-del.target") == "/lib/systemd/system/poweroff.target"


def test_dbus_is_not_started_at_boot_but_its_socket_stays(tmp_path: Path) -> None:
    """Debian's dbus links dbus.service into multi-user.target; the stage1 drops that link (nothing needs
    the bus at boot with logind masked) and keeps dbus.socket, which starts it on demand."""
    _shipped(tmp_path)
    lib = tmp_path / "usr/lib/systemd/system"
    (tmp_path / "lib").symlink_to("usr/lib")  # merged /usr, as Debian 12's
    for wants, unit in (("multi-user.target.wants", "dbus.service"), ("sockets.target.wants", "dbus.socket")):
        (lib / wants).mkdir(parents=True, exist_ok=True)
        (lib / wants / unit).symlink_to(f"../{unit}")
    stage1_trim.trim(tmp_path)
    stage1_trim.trim(tmp_path)  # again: idempotent
    assert not os.path.lexists(lib / "multi-user.target.wants/dbus.service")
    assert os.readlink(lib / "sockets.target.wants/dbus.socket") == "../dbus.socket"
    assert "dbus.service" not in stage1_trim.MASKED and "dbus.socket" not in stage1_trim.MASKED
