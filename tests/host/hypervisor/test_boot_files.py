"""Issue 22: the QEMU binary, the kernel or the initrd missing or unusable is an error before anything
of the pod is made, never a hang (host.hypervisor.boot_files, and kvmpod run for real)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.hypervisor.boot_files import BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET, check_boot_files, kernel_problem
from kvmpod.host.run import Stage1
from kvmpod.pod.problems import InvalidInput

REPO = Path(__file__).resolve().parents[3]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "generator"))


def fake_kernel(path: Path, size: int = 4096) -> Path:
    data = bytearray(size)
    data[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] = BZIMAGE_MAGIC
    path.write_bytes(bytes(data))
    return path


def test_kernels_that_cannot_boot_are_named(tmp_path: Path):
    assert kernel_problem(str(fake_kernel(tmp_path / "ok"))) is None
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "cut").write_bytes(fake_kernel(tmp_path / "k").read_bytes()[:0x100])  # truncated
    (tmp_path / "dir").mkdir()
    assert "no boot header: empty or damaged" in kernel_problem(str(tmp_path / "empty"))
    assert "no boot header" in kernel_problem(str(tmp_path / "cut"))
    assert "is not a regular file" in kernel_problem(str(tmp_path / "dir"))
    assert "cannot be used (No such file or directory)" in kernel_problem(str(tmp_path / "gone"))
    assert "is not a regular file" in kernel_problem("/dev/zero")  # never read: a device could be endless


def test_every_unusable_boot_file_is_one_problem(tmp_path: Path):
    (tmp_path / "initrd").write_bytes(b"")
    with pytest.raises(InvalidInput) as error:
        check_boot_files("no-such-qemu-binary", Stage1(str(tmp_path / "root"), str(tmp_path / "vmlinuz"),
                                                      str(tmp_path / "initrd")))
    assert [p.field for p in error.value.problems] == ["hypervisor", "--stage1 kernel", "--stage1 initrd"]
    assert "'no-such-qemu-binary' is not an executable on PATH" in str(error.value)
    assert "is empty; rebuild the stage1 (kvmpod stage1 build)" in str(error.value)


@pytest.mark.parametrize("damage", ["kernel-removed", "kernel-truncated", "initrd-empty", "no-qemu"])
def test_kvmpod_run_refuses_before_making_the_pod(tmp_path: Path, damage: str):
    stage1 = tmp_path / "stage1"
    (stage1 / "root").mkdir(parents=True)
    fake_kernel(stage1 / "vmlinuz")
    (stage1 / "initrd.img").write_bytes(b"initrd")
    if damage == "kernel-removed":
        (stage1 / "vmlinuz").unlink()
    elif damage == "kernel-truncated":
        os.truncate(stage1 / "vmlinuz", 100)
    elif damage == "initrd-empty":
        os.truncate(stage1 / "initrd.img", 0)
    (tmp_path / "app").mkdir()
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "volumes": [], "apps": [
        {"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"}}]}))
    env = dict(ENV, PATH="/nonexistent" if damage == "no-qemu" else os.environ["PATH"])
    result = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "--dir", str(tmp_path / "state"), "run",
                             "--manifest", str(pod), "--app", f"web={tmp_path / 'app'}", "--stage1", str(stage1),
                             "--net", "none", "--no-systemd"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert {"kernel-removed": "vmlinuz is missing", "kernel-truncated": "no boot header",
            "initrd-empty": "initrd.img' is empty", "no-qemu": "is not an executable on PATH"}[damage] in result.stderr
    assert not (tmp_path / "state/pods").exists() or os.listdir(tmp_path / "state/pods") == []
