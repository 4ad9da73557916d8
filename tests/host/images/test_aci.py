"""ACI extraction: a good image unpacks; hostile archives are refused with a clear error, and nothing
is written outside the destination."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from kvmpod.host.images.aci import extract_aci
from kvmpod.pod.problems import InvalidInput

MANIFEST = b'{"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/x"}'


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
            mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def make_aci(path: Path, *members: tuple[tarfile.TarInfo, bytes], manifest: bool = True, mode: str = "w:gz") -> str:
    with tarfile.open(path, mode) as tar:
        if manifest:
            info, data = _member("manifest", data=MANIFEST)
            tar.addfile(info, io.BytesIO(data))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return str(path)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """dest (empty) and a sibling outside it that must stay untouched."""
    dest = tmp_path / "pod/app"
    dest.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return dest, outside


def everything_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_a_good_image_unpacks_with_modes_links_and_hard_links(tmp_path: Path, sandbox):
    dest, outside = sandbox
    aci = make_aci(tmp_path / "good.aci",
                   _member("rootfs/", tarfile.DIRTYPE, mode=0o755),
                   _member("rootfs/bin/busybox", data=b"\x7fELF", mode=0o755),
                   _member("rootfs/bin/sh", tarfile.SYMTYPE, linkname="busybox"),
                   _member("rootfs/etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"),
                   _member("rootfs/bin/ash", tarfile.LNKTYPE, linkname="rootfs/bin/busybox"),
                   _member("./rootfs/etc/motd", data=b"hi"),
                   _member("rootfs/run/fifo", tarfile.FIFOTYPE, mode=0o600))
    extract_aci(aci, str(dest), "--app x")
    assert (dest / "manifest").read_bytes() == MANIFEST
    assert (dest / "rootfs/bin/busybox").read_bytes() == b"\x7fELF"
    assert os.stat(dest / "rootfs/bin/busybox").st_mode & 0o777 == 0o755
    assert os.readlink(dest / "rootfs/bin/sh") == "busybox"
    assert os.readlink(dest / "rootfs/etc/localtime") == "/usr/share/zoneinfo/UTC"  # inside the app at run time
    assert os.stat(dest / "rootfs/bin/ash").st_ino == os.stat(dest / "rootfs/bin/busybox").st_ino
    assert (dest / "rootfs/etc/motd").read_text() == "hi"
    assert everything_under(outside) == set()


HOSTILE = {
    "traversal": ([_member("rootfs/../../outside/evil", data=b"x")], "has a '..' component"),
    "absolute name": ([_member("/tmp/evil", data=b"x")], "is an absolute name"),
    "outside rootfs": ([_member("etc/passwd", data=b"x")], "neither manifest nor under rootfs/"),
    "symlink escaping": ([_member("rootfs/a/up", tarfile.SYMTYPE, linkname="../../../outside")],
                         "points outside the image's rootfs"),
    "symlink then file through it": ([_member("rootfs/link", tarfile.SYMTYPE, linkname="/"),
                                      _member("rootfs/link/evil", data=b"x")], "which is not a directory of the image"),
    "symlink to outside then file through it": (
        [_member("rootfs/d", tarfile.SYMTYPE, linkname="/OUTSIDE"), _member("rootfs/d/evil", data=b"x")],
        "which is not a directory of the image"),
    "hard link out": ([_member("rootfs/passwd", tarfile.LNKTYPE, linkname="/etc/passwd")], "is an absolute name"),
    "hard link to an unwritten file": ([_member("rootfs/x", tarfile.LNKTYPE, linkname="rootfs/nothing")],
                                       "does not name a file this image wrote"),
    "hard link climbing": ([_member("rootfs/x", tarfile.LNKTYPE, linkname="rootfs/../../outside/f")],
                           "has a '..' component"),
    "a name twice": ([_member("rootfs/x", data=b"1"), _member("rootfs/x", data=b"2")], "appears twice"),
    "no manifest": ([_member("rootfs/x", data=b"1")], "has no 'manifest'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_lands_outside(case: str, tmp_path: Path, sandbox):
    dest, outside = sandbox
    members, reason = HOSTILE[case]
    # "symlink to outside": a real path the link would lead to if it were followed
    members = [(_replace_outside(info, outside), data) for info, data in members]
    aci = make_aci(tmp_path / "bad.aci", *members, manifest=case != "no manifest")
    with pytest.raises(InvalidInput) as caught:
        extract_aci(aci, str(dest), "--app x")
    [problem] = caught.value.problems
    assert problem.field == "--app x"
    assert reason in problem.message, problem.message
    assert everything_under(outside) == set()
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def _replace_outside(info: tarfile.TarInfo, outside: Path) -> tarfile.TarInfo:
    if info.linkname == "/OUTSIDE":
        info.linkname = str(outside)
    return info


def test_device_nodes_are_refused_unless_root(tmp_path: Path, sandbox, monkeypatch):
    dest, _ = sandbox
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    aci = make_aci(tmp_path / "dev.aci", _member("rootfs/dev/null", tarfile.CHRTYPE, mode=0o666))
    with pytest.raises(InvalidInput, match="is a device node, which only root may create"):
        extract_aci(aci, str(dest), "--app x")
    assert not (dest / "rootfs/dev/null").exists()


def test_not_a_tar_is_one_clear_error(tmp_path: Path, sandbox):
    dest, _ = sandbox
    bad = tmp_path / "x.aci"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(InvalidInput, match="cannot be unpacked as an ACI"):
        extract_aci(str(bad), str(dest), "--app x")


@pytest.mark.parametrize("mode", ["w", "w:bz2", "w:xz"])
def test_uncompressed_and_other_compressions(tmp_path: Path, sandbox, mode: str):
    dest, _ = sandbox
    aci = make_aci(tmp_path / "c.aci", _member("rootfs/f", data=b"f"), mode=mode)
    extract_aci(aci, str(dest), "--app x")
    assert (dest / "rootfs/f").read_bytes() == b"f"
