"""A systemd host for kvmpod on a machine without systemd as PID 1: a Debian root booted by
`systemd-nspawn --boot`, with systemd-machined (Debian's systemd-container), D-Bus, QEMU and this
checkout's kvmpod .deb.

The root is the stage1's base image (kvmpod.host.images.stage1: Debian bookworm with systemd, udev,
dbus, python3-pystemd) plus `apt-get install qemu-system-x86 systemd-container`, cached in the same
cache as the stage1, content-addressed by the base's hash and this recipe's source
(`<cache>/systemd-host-<hash>/root`), built under the cache's lock and renamed into place, so CI builds
it once. Each boot copies it (`cp -a --reflink=auto`) and installs the .deb into the copy.

    python3 -m tests.e2e.systemd_host      # build (or find) the cached root; prints its path
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kvmpod.host.images import stage1

PACKAGES = ("qemu-system-x86", "systemd-container", "dbus", "procps")
HOSTNAME = "kvmpod-systemd-host"


def _install_packages(root: Path) -> None:
    with stage1._proc_mounted(root):
        stage1._chroot(root, "apt-get", "update")
        stage1._chroot(root, "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES)
    stage1._chroot(root, "apt-get", "clean")
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    # nspawn gives the container its own /etc/machine-id when the file is empty
    (root / "etc/machine-id").write_text("")


def recipe_hash(base_hash: str) -> str:
    h = hashlib.sha256(base_hash.encode())
    h.update(inspect.getsource(_install_packages).encode())
    h.update(json.dumps([PACKAGES, HOSTNAME]).encode())
    return h.hexdigest()[:16]


def ensure_systemd_host() -> Path:
    """The cached root (read it, never write it): build it when missing."""
    base = stage1.ensure_image()
    entry = stage1.CACHE_ROOT / f"systemd-host-{recipe_hash(base.root.parent.name)}"
    if (entry / "build-info.json").is_file():
        return entry / "root"
    with open(stage1.CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (entry / "build-info.json").is_file():
            return entry / "root"
        tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}")
        stage1._remove_tree(tmp)
        tmp.mkdir(parents=True)
        started = time.monotonic()
        try:
            subprocess.run(["cp", "-a", "--reflink=auto", str(base.root), str(tmp / "root")], check=True)
            _install_packages(tmp / "root")
            info = {"base": base.root.parent.name, "packages": list(PACKAGES),
                    "build_seconds": round(time.monotonic() - started, 1)}
            (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            os.rename(tmp, entry)
        except BaseException:
            stage1._remove_tree(tmp)
            raise
    return entry / "root"


if __name__ == "__main__":
    print(ensure_systemd_host())
    sys.exit(0)
