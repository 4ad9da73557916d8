import os
import shutil
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    """A private image store (KVMPOD_IMAGES_DIR) for the test."""
    path = tmp_path / "store"
    monkeypatch.setenv("KVMPOD_IMAGES_DIR", str(path))
    return path


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    """A small rootfs: the static busybox with sh and id applets, /etc/passwd and /etc/group."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "id", "cat", "pwd"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001:web:/home/web:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nwebgrp:x:1001:\nextra:x:1002:web,other\n")
    return root
