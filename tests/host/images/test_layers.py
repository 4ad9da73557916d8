"""Layers applied as the OCI image spec says (layer.md): whiteouts, opaque directories, replacement
both ways, hard links across layers, owners and modes, gzip and zstd; hostile layers refused or
applied safely with nothing written outside (the outside is checked); digests verified."""

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from kvmpod.host.images import layers as layers_module
from kvmpod.host.images.layers import Applier
from kvmpod.host.images.oci_writer import (LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, compress, image_config,
                                           write_oci_image)
from kvmpod.host.images.safe_paths import Refused
from kvmpod.host.images.store import fetch, stored_images
from kvmpod.pod.problems import InvalidInput


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644,
          uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, link, uid, gid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mtime = 1_700_000_000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 8, 0
    return info, data


def layer(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buffer.getvalue()


def D(name: str, mode: int = 0o755, **kw):
    return entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def F(name: str, data: bytes = b"x", mode: int = 0o644, **kw):
    return entry(name, data=data, mode=mode, **kw)


def L(name: str, target: str):
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777)


def H(name: str, target: str):
    return entry(name, tarfile.LNKTYPE, link=target)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """root (empty) and a sibling outside it, with a file, that must stay untouched."""
    root = tmp_path / "image/rootfs"
    root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    return root, outside


def tree(path: Path) -> dict[str, str]:
    """Every path under `path`: "dir", "-> target", or the file's text."""
    found = {}
    for p in sorted(path.rglob("*")):
        key = str(p.relative_to(path))
        mode = os.lstat(p).st_mode
        found[key] = (f"-> {os.readlink(p)}" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
                      else "fifo" if stat.S_ISFIFO(mode) else p.read_bytes().decode())
    return found


def apply(root: Path, *blobs: bytes, warnings: list | None = None, max_entries: int | None = None) -> None:
    applier = Applier(str(root), (warnings if warnings is not None else []).append, max_entries)
    try:
        for i, blob in enumerate(blobs):
            applier.apply(io.BytesIO(blob), f"layers[{i}]")
        applier.finish()
    finally:
        applier.close()


def test_whiteouts_and_opaque_directories(sandbox):
    root, _ = sandbox
    apply(root,
          layer(D("etc"), F("etc/a", b"a"), F("etc/b", b"b"), D("var/cache/apt"), F("var/cache/apt/x"),
                F("var/cache/keep"), D("opt/d"), F("opt/d/1")),
          layer(F("etc/.wh.a"), F("var/cache/.wh..wh..opq"), F("var/cache/new", b"new"), F("opt/.wh.d"),
                F("etc/.wh.missing"), F("nowhere/.wh.x"), D(".wh..wh.plnk"), F(".wh..wh.plnk/123.456")))
    assert tree(root) == {"etc": "dir", "etc/b": "b", "opt": "dir", "var": "dir", "var/cache": "dir",
                          "var/cache/new": "new"}


def test_a_whiteout_does_not_hide_what_its_own_layer_adds(sandbox):
    root, _ = sandbox
    apply(root, layer(D("d"), F("d/old")),
          layer(F("d/same", b"kept"), F("d/.wh..wh..opq"), F("d/.wh.same"), F("d/later", b"later")))
    assert tree(root) == {"d": "dir", "d/later": "later", "d/same": "kept"}


def test_file_replaced_by_a_directory_and_back_and_a_symlink_by_a_file(sandbox):
    root, outside = sandbox
    apply(root, layer(F("x", b"file"), L("link", str(outside / "keep")), D("y"), F("y/inner")),
          layer(D("x"), F("x/in", b"in"), F("link", b"now a file"), F("y", b"y file")))
    assert tree(root) == {"link": "now a file", "x": "dir", "x/in": "in", "y": "y file"}
    apply(root, layer(F("x", b"file again")))
    assert (root / "x").read_text() == "file again"
    assert (outside / "keep").read_text() == "keep"


def test_hard_links_across_layers_and_owners_and_modes(sandbox):
    root, _ = sandbox
    apply(root, layer(D("bin", mode=0o555), F("bin/busybox", b"elf", mode=0o4755, uid=0, gid=0),
                      F("home/web/notes", b"n", mode=0o600, uid=1000, gid=1001), D("tmp", mode=0o1777)),
          layer(H("bin/sh", "bin/busybox"), H("./bin/ls", "./bin/busybox")))
    assert os.path.samefile(root / "bin/sh", root / "bin/busybox")
    assert os.stat(root / "bin/busybox").st_nlink == 3
    assert stat.S_IMODE(os.stat(root / "bin/busybox").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(root / "bin").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    notes = os.stat(root / "home/web/notes")
    if os.geteuid() == 0:
        assert (notes.st_uid, notes.st_gid) == (1000, 1001)
    assert stat.S_IMODE(notes.st_mode) == 0o600
    assert notes.st_mtime == 1_700_000_000


@pytest.mark.parametrize("bad, why", [
    (F("/etc/passwd"), "'/etc/passwd' is an absolute name"),
    (F("../outside/evil"), "'../outside/evil' has a '..' component"),
    (F("a/../../outside/evil"), "'a/../../outside/evil' has a '..' component"),
    (H("evil", "../outside/keep"), "'../outside/keep' has a '..' component"),
    (H("evil", "/etc/passwd"), "'/etc/passwd' is an absolute name"),
    (H("evil", "missing"), "hard link /evil -> 'missing': no such file in the image"),
    (H("evil", "etc"), "hard link /evil -> 'etc' names a directory"),
])
def test_hostile_names_are_refused(sandbox, bad, why):
    root, outside = sandbox
    with pytest.raises(Refused) as error:
        apply(root, layer(D("etc"), bad))
    assert str(error.value) == why
    assert tree(outside) == {"keep": "keep"}
    assert not (root.parent / "evil").exists() and not (root.parent.parent / "outside/evil").exists()


def test_nothing_is_written_through_a_symlink_out(sandbox):
    root, outside = sandbox
    for link_layer, write in [(layer(L("out", str(outside))), layer(F("out/evil"))),
                              (layer(L("out", "../../outside")), layer(F("out/evil"))),
                              (layer(L("out", str(outside))), layer(D("out/evil"))),
                              (layer(L("out", str(outside))), layer(F("out/.wh.keep"))),
                              (layer(L("out", str(outside))), layer(F("out/.wh..wh..opq"))),
                              (layer(L("out", str(outside)), L("out2", str(outside))), layer(H("x", "out/keep")))]:
        for path in list(root.iterdir()):
            path.unlink()
        with pytest.raises(Refused) as error:
            apply(root, link_layer, write)
        assert "is not a directory of the image (a symlink or a file" in str(error.value)
        assert tree(outside) == {"keep": "keep"}


def test_a_symlink_leaving_the_root_is_kept_as_a_link_and_never_followed(sandbox):
    root, outside = sandbox
    apply(root, layer(L("up", "../../../outside/keep"), L("abs", str(outside / "keep"))),
          layer(F("up", b"replaced"), F("abs", b"replaced too")))  # replacing unlinks the link, not its target
    assert tree(outside) == {"keep": "keep"}
    assert tree(root) == {"abs": "replaced too", "up": "replaced"}


def test_device_nodes_are_skipped_with_a_warning_and_fifos_made(sandbox):
    root, _ = sandbox
    warnings: list[str] = []
    apply(root, layer(D("dev"), entry("dev/sda", tarfile.BLKTYPE, mode=0o666), entry("dev/null", tarfile.CHRTYPE),
                      entry("run/fifo", tarfile.FIFOTYPE, mode=0o600)), warnings=warnings)
    assert tree(root) == {"dev": "dir", "run": "dir", "run/fifo": "fifo"}
    assert warnings == ["layers[0]: device node /dev/sda skipped (an app's devices come from the guest's /dev)",
                        "layers[0]: device node /dev/null skipped (an app's devices come from the guest's /dev)"]


def test_a_huge_file_count_stops_at_the_limit(sandbox):
    root, _ = sandbox
    many = layer(*[F(f"d{i % 50}/f{i}") for i in range(2000)])
    with pytest.raises(Refused) as error:
        apply(root, many, max_entries=500)
    assert str(error.value) == "the image has more than 500 entries; kvmpod stops there"
    for path in list(root.iterdir()):
        import shutil
        shutil.rmtree(path)
    apply(root, many)  # under the limit: all of them, in bounded memory (a stream, one member at a time)
    assert sum(len(files) for _, _, files in os.walk(root)) == 2000


def test_a_name_longer_than_path_max_is_refused(sandbox):
    root, _ = sandbox
    with pytest.raises(Refused, match="is longer than 4096 bytes"):
        apply(root, layer(F("a/" * 2100 + "f")))


# ---------------------------------------------------------------- through the store: digests, compression

def _image(out: Path, *blobs: tuple[bytes, str]) -> None:
    import hashlib
    diff_ids = ["sha256:" + hashlib.sha256(plain).hexdigest() for plain, _ in blobs]
    write_oci_image(str(out), image_config({"Cmd": ["/bin/x"]}, diff_ids),
                    [(compress(plain, media_type), media_type) for plain, media_type in blobs])


def test_gzip_zstd_and_plain_layers(store, tmp_path: Path):
    _image(tmp_path / "img", (layer(F("a", b"gzip"), F("b", b"b")), LAYER_GZIP), (layer(F("b", b"zstd")), LAYER_ZSTD),
           (layer(F("c", b"tar")), LAYER_TAR))
    stored = fetch(f"oci:{tmp_path / 'img'}")
    assert tree(Path(stored.path) / "rootfs") == {"a": "gzip", "b": "zstd", "c": "tar"}


def test_a_changed_blob_is_refused_and_nothing_stored(store, tmp_path: Path):
    _image(tmp_path / "img", (layer(F("a", b"good")), LAYER_TAR))
    index = json.loads((tmp_path / "img/index.json").read_text())
    manifest_path = tmp_path / "img/blobs" / index["manifests"][0]["digest"].replace(":", "/")
    layer_digest = json.loads(manifest_path.read_text())["layers"][0]["digest"]
    blob = tmp_path / "img/blobs" / layer_digest.replace(":", "/")
    blob.write_bytes(layer(F("a", b"evil")))
    with pytest.raises(InvalidInput) as error:
        fetch(f"oci:{tmp_path / 'img'}")
    assert str(error.value) == (f"image oci:{tmp_path / 'img'}: layers[0] ({layer_digest}) does not match its digest "
                                f"{layer_digest}: the image is damaged or was changed")
    assert stored_images() == [] and os.listdir(store / ".tmp") == []


def test_a_changed_manifest_or_config_is_refused(store, tmp_path: Path):
    _image(tmp_path / "img", (layer(F("a")), LAYER_TAR))
    index = json.loads((tmp_path / "img/index.json").read_text())
    manifest_path = tmp_path / "img/blobs" / index["manifests"][0]["digest"].replace(":", "/")
    config_path = tmp_path / "img/blobs" / json.loads(manifest_path.read_text())["config"]["digest"].replace(":", "/")
    config_path.write_text(config_path.read_text().replace("/bin/x", "/bin/y"))
    with pytest.raises(InvalidInput, match="its config does not match its digest"):
        fetch(f"oci:{tmp_path / 'img'}")
    manifest_path.write_text(manifest_path.read_text() + " ")
    with pytest.raises(InvalidInput, match="its manifest does not match its digest"):
        fetch(f"oci:{tmp_path / 'img'}")


def test_an_uncompressed_layer_that_does_not_match_its_diff_id_is_refused(store, tmp_path: Path):
    plain = layer(F("a"))
    write_oci_image(str(tmp_path / "img"), image_config({}, ["sha256:" + "0" * 64]), [(plain, LAYER_TAR)])
    with pytest.raises(InvalidInput, match=r"layers\[0\] .*, uncompressed, does not match its digest sha256:0000"):
        fetch(f"oci:{tmp_path / 'img'}")


def test_a_hostile_layer_through_fetch_leaves_no_entry(store, tmp_path: Path):
    _image(tmp_path / "img", (layer(F("../evil")), LAYER_GZIP))
    with pytest.raises(InvalidInput) as error:
        fetch(f"oci:{tmp_path / 'img'}")
    assert str(error.value).endswith("'../evil' has a '..' component; the image is refused")
    assert stored_images() == [] and os.listdir(store / ".tmp") == [] and not (tmp_path / "evil").exists()


def test_an_unknown_layer_media_type_is_refused(store, tmp_path: Path):
    import hashlib
    plain = layer(F("a"))
    write_oci_image(str(tmp_path / "img"), image_config({}, ["sha256:" + hashlib.sha256(plain).hexdigest()]),
                    [(plain, "application/vnd.oci.image.layer.v1.tar+encrypted")])
    with pytest.raises(InvalidInput, match=r"layers\[0\] has media type 'application/vnd.oci.image.layer.v1.tar"
                                           r"\+encrypted', which kvmpod does not unpack"):
        fetch(f"oci:{tmp_path / 'img'}")


def test_max_entries_is_large_enough_for_real_images():
    assert layers_module.MAX_ENTRIES >= 1_000_000
