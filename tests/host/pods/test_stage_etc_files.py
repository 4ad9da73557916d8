"""--dns/--hostname files written into the guest root and every app's rootfs, never through a link."""

import os
from pathlib import Path

import pytest

from kvmpod.host.pods.stage import stage_etc_files
from kvmpod.pod.problems import InvalidInput


def test_files_reach_the_guest_and_every_app(tmp_path: Path):
    root = tmp_path / "root"
    (root / "opt/stage2/web/rootfs/etc").mkdir(parents=True)
    (root / "opt/stage2/bare/rootfs").mkdir(parents=True)  # no /etc: made
    (root / "opt/stage2/web/rootfs/etc/resolv.conf").symlink_to("/etc/resolv.conf")  # replaced, not followed
    outside = tmp_path / "outside"
    outside.write_text("host's\n")
    written = stage_etc_files(str(root), ["web", "bare"], {"hostname": b"pod\n", "hosts": b"h\n"},
                              {"hosts": b"h\n", "resolv.conf": b"nameserver 10.0.0.53\n"}, "/opt/stage2")
    assert (root / "etc/hostname").read_bytes() == b"pod\n" and not (root / "etc/resolv.conf").exists()
    for app in ("web", "bare"):
        etc = root / "opt/stage2" / app / "rootfs/etc"
        assert (etc / "resolv.conf").read_bytes() == b"nameserver 10.0.0.53\n" and not (etc / "resolv.conf").is_symlink()
        assert (etc / "hosts").read_bytes() == b"h\n" and not (etc / "hostname").exists()
    assert len(written) == 6


def test_an_etc_that_links_out_of_the_image_is_refused(tmp_path: Path):
    root = tmp_path / "root"
    (root / "opt/stage2/web/rootfs").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), root / "opt/stage2/web/rootfs/etc")
    with pytest.raises(InvalidInput) as error:
        stage_etc_files(str(root), ["web"], {}, {"hosts": b"h\n"}, "/opt/stage2")
    assert "symlink there is refused" in error.value.problems[0].message
    assert list(elsewhere.iterdir()) == []
