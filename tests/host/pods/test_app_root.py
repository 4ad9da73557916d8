"""An app's rootfs from the image store: an overlay of the stored image inside the pod's root."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.pods import app_root
from kvmpod.host.pods.pod_dirs import PodDir

REPO = Path(__file__).resolve().parents[3]


def _entry(tmp_path: Path) -> Path:
    """A store entry's shape: manifest, rootfs/ (with a file only root may write), image.json."""
    entry = tmp_path / "images/sha256-ab"
    (entry / "rootfs/bin").mkdir(parents=True)
    (entry / "rootfs/bin/tool").write_text("#!/bin/sh\n")
    (entry / "manifest").write_text('{"acKind": "ImageManifest"}')
    (entry / "image.json").write_text("{}")
    os.chmod(entry / "rootfs", 0o751)
    return entry


def _pod_root(tmp_path: Path) -> PodDir:
    pod = PodDir(str(tmp_path / "pod"))
    os.makedirs(pod.rootfs)  # stands in for the stage1 overlay the app's is mounted inside
    return pod


def test_a_failed_mount_leaves_nothing_of_the_app(tmp_path: Path) -> None:
    class NoMount:
        def mount(self, *args):
            import ctypes
            ctypes.set_errno(1)
            return -1

    entry, pod = _entry(tmp_path), _pod_root(tmp_path)
    assert app_root.mount_store_app(pod, "web", str(entry), libc=NoMount()) == "mount -t overlay: Operation not permitted"
    assert not os.path.exists(os.path.dirname(app_root.mount_point(pod, "web")))
    assert not os.path.exists(app_root.app_dir(pod, "web"))
    # the caller then copies into the same place: it must be free
    assert os.listdir(pod.rootfs) == ["opt"] and os.listdir(Path(pod.rootfs) / "opt/stage2") == []


def test_a_path_overlayfs_cannot_carry_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    entry, pod = _entry(tmp_path), _pod_root(tmp_path)
    odd = tmp_path / "im,ages"
    entry.rename(odd)
    assert app_root.mount_store_app(pod, "web", str(odd), libc=object()).startswith("a path has one of , :")
    assert not os.path.exists(Path(pod.rootfs) / "opt")


CHILD = r"""
import json, os, sys
from kvmpod.host.pods import app_root, pod_root
from kvmpod.host.pods.pod_dirs import PodDir
entry, path = sys.argv[1], sys.argv[2]
pod = PodDir(path)
pod_root.enter_private_mount_namespace()
why = app_root.mount_store_app(pod, "web", entry)
target = app_root.mount_point(pod, "web")
seen = open(os.path.join(target, "bin/tool")).read()
with open(os.path.join(target, "bin/tool"), "a") as f:
    f.write("changed by the app\n")
os.makedirs(os.path.join(target, "tmp"))
print(json.dumps({"why": why, "seen": seen, "mounted": os.path.ismount(target),
                  "manifest": open(os.path.join(os.path.dirname(target), "manifest")).read(),
                  "mode": os.stat(target).st_mode & 0o7777}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting an overlay needs root")
def test_the_app_sees_its_image_writes_to_its_own_layer_and_the_mount_dies_with_the_namespace(tmp_path: Path) -> None:
    entry, pod = _entry(tmp_path), _pod_root(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
    result = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(entry), pod.path], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    if result["why"] is not None:
        pytest.skip(f"no overlayfs here: {result['why']}")
    assert result["seen"] == "#!/bin/sh\n" and result["mounted"]
    assert result["manifest"] == '{"acKind": "ImageManifest"}'
    assert result["mode"] == 0o751  # the image root's mode, as a copy would have had
    target = app_root.mount_point(pod, "web")
    assert not os.path.ismount(target) and target not in Path("/proc/self/mounts").read_text()
    upper = Path(app_root.app_dir(pod, "web")) / "upper"
    assert (upper / "bin/tool").read_text() == "#!/bin/sh\nchanged by the app\n"
    assert (upper / "tmp").is_dir()
    assert (entry / "rootfs/bin/tool").read_text() == "#!/bin/sh\n"  # the store entry is never written
    assert not (entry / "rootfs/tmp").exists()
