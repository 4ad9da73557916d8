"""Fast checks of the QEMU command line; no guest is booted."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import boot


def _argv(**kw: object) -> list[str]:
    args: dict[str, object] = dict(
        kernel=Path("/k/vmlinuz"),
        initrd=Path("/k/initrd.img"),
        root=Path("/r"),
        shares=[],
        console_log=Path("/w/console.log"),
        accelerator="tcg",
    )
    args.update(kw)
    return boot.qemu_argv(**args)  # type: ignore[arg-type]


def _values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_root_is_9p_share_tagged_rootfs() -> None:
    argv = _argv()
    assert _values(argv, "-fsdev")[0] == "local,id=fs0,path=/r,security_model=none"
    assert _values(argv, "-device")[0] == "virtio-9p-pci,fsdev=fs0,mount_tag=rootfs"
    cmdline = _values(argv, "-append")[0].split()
    assert "root=rootfs" in cmdline and "rootfstype=9p" in cmdline and "panic=1" in cmdline


def test_headless_and_no_reboot() -> None:
    argv = _argv()
    for flag in ("-nodefaults", "-no-reboot"):
        assert flag in argv
    assert _values(argv, "-display") == ["none"]
    assert _values(argv, "-serial") == ["chardev:console"]


def test_tcg_uses_cpu_max_kvm_uses_host() -> None:
    assert _values(_argv(), "-cpu") == ["max"]
    assert _values(_argv(accelerator="kvm"), "-cpu") == ["host"]
    assert _values(_argv(accelerator="kvm"), "-accel") == ["kvm"]


def test_extra_shares_readonly_and_commas_escaped() -> None:
    shares = [boot.Share(Path("/a,b"), "vol1", readonly=True), boot.Share(Path("/c"), "vol2")]
    argv = _argv(shares=shares)
    assert _values(argv, "-fsdev")[1:] == [
        "local,id=fs1,path=/a,,b,security_model=none,readonly=on",
        "local,id=fs2,path=/c,security_model=none",
    ]
    assert _values(argv, "-device")[1:] == [
        "virtio-9p-pci,fsdev=fs1,mount_tag=vol1",
        "virtio-9p-pci,fsdev=fs2,mount_tag=vol2",
    ]


@pytest.mark.parametrize("tag", ["", "x" * 32, "a,b", "/dev/root"])
def test_bad_tags_refused(tag: str) -> None:
    with pytest.raises(ValueError):
        _argv(shares=[boot.Share(Path("/a"), tag)])


def test_accelerator_is_tcg_without_hardware_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    present: set[str] = {"/dev/kvm", "/sys/module/kvm_pvm"}
    monkeypatch.setattr(Path, "exists", lambda self: str(self) in present)
    assert boot.detect_accelerator() == "tcg"  # kvm_pvm: software nested KVM
    present.add("/sys/module/kvm_intel")
    assert boot.detect_accelerator() == "tcg"  # kvm_pvm still loaded
    present.discard("/sys/module/kvm_pvm")
    assert boot.detect_accelerator() == "kvm"
    present.discard("/dev/kvm")
    assert boot.detect_accelerator() == "tcg"
