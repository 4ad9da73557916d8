"""The pod's root: an overlay of the stage1 root in kvmpod run's own mount namespace, else a copy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.pods import pod_root
from kvmpod.host.pods.pod_dirs import PodDir

REPO = Path(__file__).resolve().parents[3]


def test_overlay_options_name_the_three_dirs() -> None:
    assert pod_root.overlay_options("/s/root", "/p/stage1/upper", "/p/stage1/work") == \
        "lowerdir=/s/root,upperdir=/p/stage1/upper,workdir=/p/stage1/work"


@pytest.mark.parametrize("bad", [",", ":", "\\", "\n"])
def test_a_path_overlayfs_cannot_carry_gets_no_options(bad: str) -> None:
    assert pod_root.overlay_options(f"/s{bad}x/root", "/p/upper", "/p/work") is None
    assert pod_root.overlay_options("/s/root", f"/p{bad}/upper", "/p/work") is None


def _stage1(tmp_path: Path) -> Path:
    lower = tmp_path / "stage1-root"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/hostname").write_text("kvmpod\n")
    os.chmod(lower, 0o755)
    return lower


def test_without_root_the_pod_gets_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower = _stage1(tmp_path)
    pod = PodDir(str(tmp_path / "pod"))
    os.makedirs(pod.stage1)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert pod_root.make_root(str(lower), pod, private_namespace=True) == "copy (not root)"
    assert (Path(pod.rootfs) / "etc/hostname").read_text() == "kvmpod\n"
    assert pod_root.pod_files(pod) == pod.rootfs


def test_a_path_with_a_comma_gets_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower = _stage1(tmp_path)
    pod = PodDir(str(tmp_path / "po,d"))
    os.makedirs(pod.stage1)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    how = pod_root.make_root(str(lower), pod, private_namespace=True)
    assert how.startswith("copy (a path has one of , :"), how
    assert (Path(pod.rootfs) / "etc/hostname").is_file()
    assert not os.path.exists(pod_root.upper_dir(pod))


def test_a_failed_mount_leaves_no_upper_dir_and_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMount:
        def mount(self, *args):
            import ctypes
            ctypes.set_errno(1)
            return -1

    lower = _stage1(tmp_path)
    pod = PodDir(str(tmp_path / "pod"))
    os.makedirs(pod.stage1)
    assert pod_root.mount_overlay(str(lower), pod, libc=NoMount()) == "mount -t overlay: Operation not permitted"
    assert not os.path.exists(pod_root.upper_dir(pod)) and not os.path.exists(pod_root.work_dir(pod))


CHILD = r"""
import json, os, sys
from kvmpod.host.pods import pod_root
from kvmpod.host.pods.pod_dirs import PodDir
lower, path = sys.argv[1], sys.argv[2]
pod = PodDir(path)
os.makedirs(pod.stage1)
how = pod_root.make_root(lower, pod, private_namespace=False)
seen = open(os.path.join(pod.rootfs, "etc/hostname")).read()
with open(os.path.join(pod.rootfs, "etc/written"), "w") as f:
    f.write("by the pod")
os.setxattr(os.path.join(pod.rootfs, "etc/written"), "user.virtfs.uid", b"1000")
mounted_inside = os.path.ismount(pod.rootfs)
print(json.dumps({"how": how, "seen": seen, "mounted_inside": mounted_inside}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting an overlay needs root")
def test_the_overlay_shows_the_stage1_takes_the_pods_writes_and_stays_in_its_namespace(tmp_path: Path) -> None:
    lower = _stage1(tmp_path)
    pod = PodDir(str(tmp_path / "pod"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(lower), pod.path], env=env, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out)
    if result["how"] != "overlay":
        pytest.skip(f"no overlayfs here: {result['how']}")
    assert result["seen"] == "kvmpod\n" and result["mounted_inside"]
    # The process is gone: so are its namespace and the overlay. The write and its xattr are in the
    # upper dir, the stage1 is untouched, and the host never saw a mount.
    assert not os.path.ismount(pod.rootfs)
    assert pod.rootfs not in Path("/proc/self/mounts").read_text()
    written = Path(pod_root.upper_dir(pod)) / "etc/written"
    assert written.read_text() == "by the pod"
    assert os.getxattr(written, "user.virtfs.uid") == b"1000"
    assert not (lower / "etc/written").exists()
    assert pod_root.pod_files(pod) == pod_root.upper_dir(pod)
    assert os.stat(pod_root.upper_dir(pod)).st_mode & 0o7777 == 0o755


DETACH_CHILD = r"""
import json, os, sys
from kvmpod.host.pods import pod_root
from kvmpod.host.pods.pod_dirs import PodDir
lower, path, umount = sys.argv[1], sys.argv[2], sys.argv[3]
pod_root.DETACH_WAIT_SECONDS = 1.0
pod = PodDir(path)
os.makedirs(pod.stage1)
how = pod_root.make_root(lower, pod, private_namespace=False)
open(os.path.join(pod.rootfs, "etc/written"), "w").write("by the pod")
went = pod_root.detach(pod, umount=umount)
table = open("/proc/self/mountinfo").read()
print(json.dumps({"how": how, "went": went, "mounted": os.path.ismount(pod.rootfs), "in_table": pod.rootfs in table,
                  "again": pod_root.detach(pod, umount=umount)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting an overlay needs root")
@pytest.mark.parametrize("umount, went", [("umount", "detached by umount"), ("/nonexistent/umount", "unmounted here"),
                                          ("true", "unmounted here")])
def test_a_pods_end_detaches_its_overlay_before_it_returns(tmp_path: Path, umount: str, went: str) -> None:
    """issue 20: `umount --lazy` in the background takes the kernel's cleanup off kvmpod run's end, but the
    mount is gone from the table when detach() returns; no umount (or one that does nothing): unmounted here."""
    lower = _stage1(tmp_path)
    pod = PodDir(str(tmp_path / "pod"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
    out = subprocess.run([sys.executable, "-c", DETACH_CHILD, str(lower), pod.path, umount], env=env,
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    if result["how"] != "overlay":
        pytest.skip(f"no overlayfs here: {result['how']}")
    assert result == {"how": "overlay", "went": went, "mounted": False, "in_table": False, "again": "not mounted"}
    assert (Path(pod_root.upper_dir(pod)) / "etc/written").read_text() == "by the pod"
