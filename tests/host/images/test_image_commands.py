"""kvmpod image fetch|list|rm|gc through the CLI: output, errors named, exit statuses, and gc/rm
never removing an image a running pod (its lock held) was made from."""

import fcntl
import os
from pathlib import Path

import pytest

from kvmpod.host.cli import main
from kvmpod.host.images.oci_writer import write_oci_layout
from kvmpod.host.images.store import record_use, stored_images

CONFIG = {"Cmd": ["/bin/sh"], "User": "web"}


@pytest.fixture
def images(store: Path, busybox_rootfs: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("KVMPOD_PODS_DIR", str(tmp_path / "pods"))
    layout = tmp_path / "layout"
    a = write_oci_layout(str(busybox_rootfs), dict(CONFIG, Cmd=["a"]), str(layout), ref="a")
    b = write_oci_layout(str(busybox_rootfs), dict(CONFIG, Cmd=["b"]), str(layout), ref="b")
    return {"a": a, "b": b, "layout": str(layout)}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_fetch_prints_digests_and_says_when_already_there(images, capsys):
    status, out, err = run(capsys, "image", "fetch", f"oci:{images['layout']}:a", f"oci:{images['layout']}:b")
    assert (status, out) == (0, f"{images['a']}\n{images['b']}\n")
    assert "kvmpod: image layout:a: unpacking 1 layer" in err
    status, out, err = run(capsys, "image", "fetch", f"oci:{images['layout']}:a")
    assert (status, out, err) == (0, f"{images['a']}\n", f"kvmpod: image layout:a: already in the store ({images['a']})\n")


def test_fetch_errors(images, capsys, tmp_path: Path):
    assert run(capsys, "image", "fetch", f"oci:{images['layout']}:c") == (
        2, "", f"kvmpod: image oci:{images['layout']}:c: has no image named 'c' (its refs: a, b)\n")
    assert run(capsys, "image", "fetch", "x.aci") == (
        2, "", "kvmpod: image x.aci: is not an image reference; give oci:PATH[:REF], oci-archive:PATH[:REF] or "
               "docker-archive:PATH[:REPO:TAG]\n")
    assert run(capsys, "image")[0] == 2


def test_list_rm_by_name_and_digest(images, capsys):
    run(capsys, "image", "fetch", f"oci:{images['layout']}:a", f"oci:{images['layout']}:b")
    status, out, _ = run(capsys, "image", "list")
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["NAME", "DIGEST", "SIZE", "LAST", "USE"]
    assert [line.split()[:2] for line in lines[1:]] == [["layout:a", images["a"][:19]], ["layout:b", images["b"][:19]]]
    assert images["a"] in run(capsys, "image", "list", "--full")[1]
    assert run(capsys, "image", "rm", "layout:a") == (0, f"removed {images['a']} (layout:a)\n", "")
    assert run(capsys, "image", "rm", images["b"][7:19]) == (0, f"removed {images['b']} (layout:b)\n", "")
    assert run(capsys, "image", "rm", "layout:a") == (
        2, "", f"kvmpod: DIGEST|NAME: 'layout:a': no such image in {os.environ['KVMPOD_IMAGES_DIR']}; see kvmpod "
               f"image list\n")
    assert stored_images() == []


def _running_pod(tmp_path: Path, digest: str) -> int:
    pod = tmp_path / "pods/0b1c2d3e-0000-4000-8000-000000000001"
    pod.mkdir(parents=True)
    fd = os.open(pod / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    record_use(str(pod), [digest])
    return fd


def test_gc_and_rm_keep_a_running_pods_image(images, capsys, tmp_path: Path):
    run(capsys, "image", "fetch", f"oci:{images['layout']}:a", f"oci:{images['layout']}:b")
    assert run(capsys, "image", "gc") == (0, "", "")  # both used just now: within the default 24h
    fd = _running_pod(tmp_path, images["a"])
    try:
        assert run(capsys, "image", "rm", "layout:a") == (
            2, "", "kvmpod: DIGEST|NAME: 'layout:a' is used by running pod 0b1c2d3e-0000-4000-8000-000000000001; "
                   "stop it first (kvmpod stop)\n")
        assert run(capsys, "image", "gc", "--older-than", "0s") == (
            0, f"removed {images['b']} (layout:b)\nkept {images['a']} (layout:a): a running pod uses it\n", "")
    finally:
        os.close(fd)  # the pod ends
    assert run(capsys, "image", "gc", "--older-than", "0s") == (0, f"removed {images['a']} (layout:a)\n", "")
    assert run(capsys, "image", "gc", "--older-than", "soon") == (
        2, "", "kvmpod: --older-than: 'soon' is not an age; give e.g. 90s, 30m, 2h, 7d\n")
