"""The image store: fetch into it, the second fetch unpacks nothing, concurrent fetches of one
image, use by running pods."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.images.oci_writer import write_docker_archive, write_oci_layout
from kvmpod.host.images.store import (StoredImage, fetch, images_dir, images_in_use, is_image_reference,
                                      record_use, stored_images)
from kvmpod.pod.manifest import load_json, parse_image_app
from kvmpod.pod.problems import InvalidInput

CONFIG = {"Entrypoint": ["sh", "-c"], "Cmd": ["id"], "Env": ["PATH=/bin", "GREETING=hi"], "User": "web",
          "WorkingDir": "/srv/www", "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/data": {}}}


def test_references_are_the_containers_tools_transports():
    assert is_image_reference("oci:/x") and is_image_reference("oci-archive:a.tar")
    assert is_image_reference("docker-archive:a.tar:example.com/web:1.0")
    assert not is_image_reference("x.aci") and not is_image_reference("/srv/app") and not is_image_reference("docker://x")


def test_store_location_overridable(monkeypatch):
    monkeypatch.delenv("KVMPOD_IMAGES_DIR", raising=False)
    monkeypatch.delenv("KVMPOD_DIR", raising=False)
    assert images_dir() == "/var/lib/kvmpod/images"
    monkeypatch.setenv("KVMPOD_DIR", "/srv/kvmpod")
    assert images_dir() == "/srv/kvmpod/images"
    monkeypatch.setenv("KVMPOD_IMAGES_DIR", "/elsewhere")
    assert images_dir() == "/elsewhere"


def test_fetch_an_oci_layout_then_again_unpacks_nothing(store: Path, busybox_rootfs: Path, tmp_path: Path):
    digest = write_oci_layout(str(busybox_rootfs), CONFIG, str(tmp_path / "web"), ref="1.0")
    said: list[str] = []
    stored = fetch(f"oci:{tmp_path / 'web'}:1.0", said.append)
    assert stored == StoredImage(digest, "web:1.0", str(store / digest.replace(":", "-")))
    assert any("unpacking 1 layer" in s for s in said)
    manifest = json.loads((Path(stored.path) / "manifest").read_text())
    section = parse_image_app(load_json(json.dumps(manifest), "m"), "m")
    assert section.exec == ("/bin/sh", "-c", "id") and section.user == "1000" and section.group == "1001"
    assert section.working_directory == "/srv/www"
    assert (Path(stored.path) / "rootfs/srv/www").is_dir()
    assert os.path.samefile(Path(stored.path) / "rootfs/bin/busybox", Path(stored.path) / "rootfs/bin/busybox")
    mtime = (Path(stored.path) / "rootfs/bin").stat().st_mtime_ns
    said.clear()
    assert fetch(f"oci:{tmp_path / 'web'}:1.0", said.append) == stored
    assert said == [f"image web:1.0: already in the store ({digest})"]
    assert (Path(stored.path) / "rootfs/bin").stat().st_mtime_ns == mtime
    assert [e.digest for e in stored_images()] == [digest]
    assert stat.S_IMODE(store.stat().st_mode) == 0o700  # setuid programs of images out of the host users' reach


def test_fetch_a_docker_archive(store: Path, busybox_rootfs: Path, tmp_path: Path):
    image_id = write_docker_archive(str(busybox_rootfs), CONFIG, str(tmp_path / "web.tar"), "example.com/web:1.0")
    stored = fetch(f"docker-archive:{tmp_path / 'web.tar'}")
    assert stored.digest == image_id and stored.name == "example.com/web:1.0"
    assert fetch(f"docker-archive:{tmp_path / 'web.tar'}:example.com/web:1.0") == stored


def test_a_bad_reference_is_invalid_input_naming_it(store: Path, tmp_path: Path):
    with pytest.raises(InvalidInput) as error:
        fetch(f"oci:{tmp_path / 'missing'}")
    assert str(error.value) == f"image oci:{tmp_path / 'missing'}: {tmp_path / 'missing'} does not exist"
    assert not store.exists() or not stored_images()


_FETCH = """
import sys
sys.path.insert(0, {generator!r})
from kvmpod.host.images.store import fetch
said = []
print(fetch(sys.argv[1], said.append).digest, any("unpacking" in s for s in said))
"""


def test_concurrent_fetches_of_one_image_unpack_it_once(store: Path, busybox_rootfs: Path, tmp_path: Path):
    for i in range(300):  # enough files that the two overlap
        (busybox_rootfs / f"f{i}").write_text(str(i))
    digest = write_oci_layout(str(busybox_rootfs), CONFIG, str(tmp_path / "web"))
    generator = str(Path(__file__).resolve().parents[3] / "generator")
    script = _FETCH.format(generator=generator)
    procs = [subprocess.Popen([sys.executable, "-c", script, f"oci:{tmp_path / 'web'}"], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ)) for _ in range(2)]
    outputs = sorted(p.communicate()[0].split() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [[digest, "False"], [digest, "True"]]
    assert os.listdir(store / ".tmp") == []
    assert [e.digest for e in stored_images()] == [digest]


def test_record_use_and_images_in_use(store: Path, busybox_rootfs: Path, tmp_path: Path):
    write_oci_layout(str(busybox_rootfs), CONFIG, str(tmp_path / "web"))
    stored = fetch(f"oci:{tmp_path / 'web'}")
    pod = tmp_path / "pod"
    pod.mkdir()
    record_use(str(pod), [stored])
    assert images_in_use([str(pod), str(tmp_path / "no-pod")]) == {stored.digest: [str(pod)]}


def test_kvmpod_run_app_takes_an_image_reference(store: Path, busybox_rootfs: Path, tmp_path: Path):
    from kvmpod.host.run import install_app, parse_app_images
    from kvmpod.pod.manifest import parse_pod_manifest

    pod = parse_pod_manifest({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [{"name": "web"}]})
    digest = write_oci_layout(str(busybox_rootfs), CONFIG, str(tmp_path / "web"), ref="1.0")
    said: list[str] = []
    images = parse_app_images([f"web=oci:{tmp_path / 'web'}:1.0"], pod, said.append)
    assert images == {"web": str(store / digest.replace(":", "-"))}
    root = tmp_path / "stage1"
    install_app(str(root), "web", images["web"], "--app web")
    installed = root / "opt/stage2/web"
    assert json.loads((installed / "manifest").read_text())["app"]["user"] == "1000"
    assert (installed / "rootfs/bin/busybox").read_bytes() == (busybox_rootfs / "bin/busybox").read_bytes()
    with pytest.raises(InvalidInput) as error:
        parse_app_images([f"web=oci:{tmp_path / 'web'}:2.0"], pod, said.append)
    assert [str(p) for p in error.value.problems] == [
        f"--app: web=oci:{tmp_path / 'web'}:2.0: has no image named '2.0' (its refs: 1.0)"]
