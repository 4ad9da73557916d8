"""References and the image they name: REF selection, multi-arch indexes, archives; the writer's
output read by the real skopeo, and images made by skopeo and umoci read by kvmpod."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmpod.host.images.image_source import ImageError, open_image, parse_reference
from kvmpod.host.images.oci_writer import (LAYER_TAR, OCI_INDEX, host_architecture, image_config, layer_tar,
                                           write_docker_archive, write_oci_image, write_oci_layout)
from kvmpod.host.images.store import fetch
from kvmpod.pod.problems import InvalidInput

CONFIG = {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "id"], "Env": ["PATH=/bin"], "User": "web"}
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (apt install skopeo)")
needs_umoci = pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed (apt install umoci)")


@pytest.mark.parametrize("word, parsed", [
    ("oci:/a/b", ("oci", "/a/b", None)),
    ("oci:/a/b:1.0", ("oci", "/a/b", "1.0")),
    ("oci:/a/b:example.com/web:1.0", ("oci", "/a/b", "example.com/web:1.0")),
    ("oci-archive:/a/b.tar:latest", ("oci-archive", "/a/b.tar", "latest")),
    ("docker-archive:/a/b.tar:example.com:5000/web:1.0", ("docker-archive", "/a/b.tar", "example.com:5000/web:1.0")),
    ("docker-archive:/a/b.tar:@1", ("docker-archive", "/a/b.tar", "@1")),
])
def test_references_spelled_as_skopeo_does(word, parsed):
    reference = parse_reference(word)
    assert (reference.transport, reference.path, reference.ref) == parsed


@pytest.mark.parametrize("word, message", [
    ("oci:", "names no path; give oci:PATH"),
    ("oci:/a:", "ends with ':' but names no REF"),
    ("docker-archive:/a.tar:", "ends with ':' but names no REPO:TAG"),
    ("docker://x", "is not an image reference; give oci:PATH[:REF], oci-archive:PATH[:REF] or "
                   "docker-archive:PATH[:REPO:TAG]"),
])
def test_bad_references(word, message):
    with pytest.raises(ImageError) as error:
        parse_reference(word)
    assert str(error.value) == message


def _layout(tmp_path: Path, rootfs: Path, *refs: str) -> Path:
    out = tmp_path / "layout"
    for ref in refs:
        write_oci_layout(str(rootfs), dict(CONFIG, Cmd=["-c", f"echo {ref}"]), str(out), ref=ref)
    return out


def _cmd(out: str) -> list:
    image = open_image(parse_reference(out))
    try:
        return image.config["config"]["Cmd"]
    finally:
        image.close()


def test_ref_selection(tmp_path: Path, busybox_rootfs: Path):
    out = _layout(tmp_path, busybox_rootfs, "1.0")
    assert _cmd(f"oci:{out}") == ["-c", "echo 1.0"]  # the only image
    _layout(tmp_path, busybox_rootfs, "latest", "2.0")
    assert _cmd(f"oci:{out}") == ["-c", "echo latest"]  # several: latest
    assert _cmd(f"oci:{out}:2.0") == ["-c", "echo 2.0"]
    with pytest.raises(ImageError) as error:
        _cmd(f"oci:{out}:3.0")
    assert str(error.value) == "has no image named '3.0' (its refs: 1.0, 2.0, latest)"
    index = json.loads((out / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] != "latest"]
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError) as error:
        _cmd(f"oci:{out}")
    assert str(error.value) == "holds 2 images and none is named 'latest'; add :REF (its refs: 1.0, 2.0)"


def test_a_multi_arch_index_resolves_for_this_host(tmp_path: Path, busybox_rootfs: Path):
    out = tmp_path / "multi"
    layer = layer_tar(str(busybox_rootfs))
    diff = ["sha256:" + hashlib.sha256(layer).hexdigest()]
    digests = {}
    for arch in ("arm64", host_architecture(), "s390x"):
        digests[arch] = write_oci_image(str(out), image_config({"Cmd": [arch]}, diff, arch), [(layer, LAYER_TAR)],
                                        ref=None, platform_={"os": "linux", "architecture": arch})
    index_bytes = (out / "index.json").read_bytes()
    nested = json.loads(index_bytes)
    nested_blob = json.dumps(nested).encode()
    digest = "sha256:" + hashlib.sha256(nested_blob).hexdigest()
    (out / "blobs/sha256" / digest.split(":")[1]).write_bytes(nested_blob)
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": digest, "size": len(nested_blob),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    assert _cmd(f"oci:{out}:multi") == [host_architecture()]  # through a nested index
    (out / "index.json").write_bytes(index_bytes)
    assert _cmd(f"oci:{out}") == [host_architecture()]  # index.json's own platforms
    index = json.loads(index_bytes)
    index["manifests"] = [m for m in index["manifests"] if m["platform"]["architecture"] != host_architecture()]
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError) as error:
        _cmd(f"oci:{out}")
    assert str(error.value) == f"has no image for linux/{host_architecture()} in index.json (it has: linux/arm64, linux/s390x)"


def test_docker_archive_tags_and_indexes(tmp_path: Path, busybox_rootfs: Path):
    archive = tmp_path / "web.tar"
    write_docker_archive(str(busybox_rootfs), CONFIG, str(archive), "example.com/web:1.0")
    assert _cmd(f"docker-archive:{archive}") == ["-c", "id"]
    assert _cmd(f"docker-archive:{archive}:example.com/web:1.0") == ["-c", "id"]
    assert _cmd(f"docker-archive:{archive}:@0") == ["-c", "id"]
    with pytest.raises(ImageError) as error:
        _cmd(f"docker-archive:{archive}:example.com/web:2.0")
    assert str(error.value) == "has no image tagged 'example.com/web:2.0' (its tags: example.com/web:1.0)"
    with pytest.raises(ImageError) as error:
        _cmd(f"docker-archive:{archive}:@3")
    assert str(error.value) == "has 1 images; @3 names none (give @0 to @0)"
    write_docker_archive(str(busybox_rootfs), CONFIG, str(tmp_path / "busybox.tar"), "busybox:latest")
    assert open_image(parse_reference(f"docker-archive:{tmp_path / 'busybox.tar'}:docker.io/library/busybox")).name \
        == "docker.io/library/busybox"


def test_not_an_image(tmp_path: Path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.tar").write_bytes(b"not a tar" * 100)
    for word, message in [(f"oci:{tmp_path / 'dir'}", "cannot read its oci-layout file (oci-layout): No such file or directory"),
                          (f"oci:{tmp_path / 'file.tar'}", f"{tmp_path / 'file.tar'} is not a directory (an OCI image layout)"),
                          (f"docker-archive:{tmp_path / 'dir'}", f"{tmp_path / 'dir'} is not a file (a tar archive)")]:
        with pytest.raises(ImageError) as error:
            open_image(parse_reference(word))
        assert str(error.value) == message
    with pytest.raises(ImageError, match="cannot be read as a tar archive"):
        open_image(parse_reference(f"oci-archive:{tmp_path / 'file.tar'}"))


# ---------------------------------------------------------------- the real tools

@needs_skopeo
def test_skopeo_reads_what_kvmpod_writes_and_kvmpod_reads_what_skopeo_writes(store, tmp_path: Path, busybox_rootfs: Path):
    out = tmp_path / "web"
    digest = write_oci_layout(str(busybox_rootfs), CONFIG, str(out), ref="1.0")
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{out}:1.0"], capture_output=True, text=True,
                                          check=True).stdout)
    assert inspected["Digest"] == digest and inspected["Architecture"] == host_architecture()
    archive = tmp_path / "written.tar"
    write_docker_archive(str(busybox_rootfs), CONFIG, str(archive), "example.com/web:1.0")
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True,
                                          text=True, check=True).stdout)
    assert inspected["RepoTags"] == ["example.com/web"] or inspected["Os"] == "linux"
    for source, target in [(f"oci:{out}:1.0", f"docker-archive:{tmp_path / 'd.tar'}:example.com/web:1.0"),
                           (f"oci:{out}:1.0", f"oci-archive:{tmp_path / 'o.tar'}:1.0"),
                           (f"docker-archive:{archive}", f"oci:{tmp_path / 'back'}:2.0")]:
        subprocess.run(["skopeo", "copy", "-q", source, target], check=True, capture_output=True)
    for reference in [f"docker-archive:{tmp_path / 'd.tar'}", f"oci-archive:{tmp_path / 'o.tar'}",
                      f"oci:{tmp_path / 'back'}:2.0"]:
        stored = fetch(reference)
        manifest = json.loads((Path(stored.path) / "manifest").read_text())
        assert manifest["app"]["exec"] == ["/bin/sh", "-c", "id"] and manifest["app"]["user"] == "1000"
        assert (Path(stored.path) / "rootfs/bin/busybox").read_bytes() == (busybox_rootfs / "bin/busybox").read_bytes()


@needs_umoci
def test_an_image_umoci_made_with_a_whiteout(store, tmp_path: Path, busybox_rootfs: Path):
    layout = tmp_path / "umoci"

    def umoci(*args: str) -> None:
        subprocess.run(["umoci", *args], check=True, capture_output=True)

    bundle = tmp_path / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:web")
    umoci("unpack", "--image", f"{layout}:web", str(bundle))
    shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True, dirs_exist_ok=True)
    (bundle / "rootfs/etc/motd").write_text("gone in the next layer")
    umoci("repack", "--image", f"{layout}:web", str(bundle))
    umoci("unpack", "--image", f"{layout}:web", str(tmp_path / "bundle2"))
    (tmp_path / "bundle2/rootfs/etc/motd").unlink()
    umoci("repack", "--image", f"{layout}:web", str(tmp_path / "bundle2"))  # a layer with the whiteout .wh.motd
    umoci("config", "--image", f"{layout}:web", "--config.entrypoint", "/bin/sh", "--config.user", "web",
          "--config.workingdir", "/home/web", "--config.volume", "/data", "--config.exposedports", "80/tcp")
    stored = fetch(f"oci:{layout}:web")
    manifest = json.loads((Path(stored.path) / "manifest").read_text())
    assert manifest["app"]["exec"] == ["/bin/sh"]
    assert (manifest["app"]["user"], manifest["app"]["group"]) == ("1000", "1001")
    assert manifest["app"]["workingDirectory"] == "/home/web" and (Path(stored.path) / "rootfs/home/web").is_dir()
    assert manifest["app"]["mountPoints"] == [{"name": "volume-data", "path": "/data", "readOnly": False}]
    assert manifest["app"]["ports"][0]["name"] == "80-tcp"
    assert not (Path(stored.path) / "rootfs/etc/motd").exists() and (Path(stored.path) / "rootfs/etc/passwd").exists()
    assert len(json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:web"], capture_output=True, text=True,
                                         check=True).stdout)["Layers"]) == 2


def test_fetch_errors_name_the_reference(store, tmp_path: Path):
    with pytest.raises(InvalidInput) as error:
        fetch("docker-archive:")
    assert str(error.value) == "image docker-archive:: names no path; give docker-archive:PATH"
