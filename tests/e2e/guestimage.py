"""Build and cache a minimal Debian bookworm guest root for the end-to-end suite.

The image is a plain directory tree booted as a 9p root (see boot.py), plus the
kernel and initrd copied out of it. It is cached under
``/var/cache/kvmpod-e2e/<hash>/`` where <hash> covers the recipe's source, so
editing the recipe makes a new image and an unchanged recipe never rebuilds.

Run ``python3 -m tests.e2e.guestimage`` from the repository root to prebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR_ENV = "KVMPOD_E2E_MIRROR"
CACHE_ROOT = Path(os.environ.get("KVMPOD_E2E_CACHE", "/var/cache/kvmpod-e2e"))

# Installed by debootstrap. The kernel is installed later, on its own, so its
# initrd is built once, after the 9p modules are configured.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "python3-minimal",
    "initramfs-tools",
    "iproute2",  # the generator's NIC units run /sbin/ip
    "python3-pystemd",  # `kvmpod status` reads unit states over D-Bus (pulls in dbus)
)
KERNEL_PACKAGE = "linux-image-amd64"
# Needed in the initrd to mount a 9p root over virtio before systemd starts.
INITRD_MODULES: tuple[str, ...] = ("virtio_pci", "netfs", "9pnet", "9pnet_virtio", "9p")
# Any fixed value: a stable id makes journals of different boots comparable
# and keeps systemd-firstboot from asking for one.
MACHINE_ID = "6b766d706f6465326574657374303031"
# Units that would wait for a person on the console, which no one watches.
MASKED_UNITS: tuple[str, ...] = (
    "systemd-firstboot.service",
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "getty.target",
)


# Seconds of the cold build when this process built the image (None: it was cached).
BUILT_THIS_RUN: float | None = None


class ImageBuildError(RuntimeError):
    """The guest image could not be built; the message says which step failed."""


def _host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    return SUITE


def _deb822_mirror(text: str, codename: str) -> str | None:
    """The first URIs: of a stanza whose Suites include `codename` (exactly, not codename-updates)."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "deb").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        if codename in fields.get("suites", "").split() and fields.get("uris", "").split():
            return fields["uris"].split()[0]
    return None


def _one_line_mirror(text: str) -> str | None:
    """The URL of the first `deb [options] URL SUITE ...` line."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            return words[0]
    return None


def host_mirror(apt_dir: Path = Path("/etc/apt"), codename: str | None = None) -> str:
    """The Debian mirror this host's own apt uses, or $KVMPOD_E2E_MIRROR when set.

    Read from the host's configuration rather than named here: the suite must reach Debian the
    way the host does. Not part of the recipe hash, since any mirror serves the same suite.
    """
    override = os.environ.get(MIRROR_ENV, "").strip()
    if override:
        return override
    codename = codename or _host_codename()
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        found = _deb822_mirror(path.read_text(errors="replace"), codename)
        if found:
            return found
    legacy = apt_dir / "sources.list"
    if legacy.is_file():
        found = _one_line_mirror(legacy.read_text(errors="replace"))
        if found:
            return found
    raise ImageBuildError(
        f"no Debian mirror found in {apt_dir}/sources.list.d/*.sources (a stanza with Suites: {codename}) "
        f"nor in {apt_dir}/sources.list (a `deb URL SUITE` line); set {MIRROR_ENV}=URL"
    )


@dataclass(frozen=True)
class GuestImage:
    """Paths of one cached image. Treat every path as read-only."""

    root: Path
    vmlinuz: Path
    initrd: Path


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> None:
    # Output goes to our stderr so a failed build shows its own diagnosis.
    proc = subprocess.run(argv, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise ImageBuildError(f"{argv[0]} exited {proc.returncode}: {' '.join(argv)}")


def _chroot(root: Path, *argv: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
    }
    _run(["chroot", str(root), *argv], env=env)


@contextlib.contextmanager
def _proc_mounted(root: Path) -> Iterator[None]:
    # Kernel postinst and mkinitramfs read /proc; unmount even on failure so
    # the temp tree can be deleted.
    target = root / "proc"
    _run(["mount", "-t", "proc", "proc", str(target)])
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _debootstrap(root: Path) -> None:
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES),
            SUITE,
            str(root),
            host_mirror(),
        ]
    )


def _prepare_headless(root: Path) -> None:
    (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
    (root / "etc/hostname").write_text("kvmpod-e2e\n")
    # The root comes from the kernel command line; nothing else to mount.
    (root / "etc/fstab").write_text("")
    # journald stores persistently only when this directory exists, and the
    # host reads it after the VM exits.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in MASKED_UNITS:
        link = unit_dir / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")


def _install_kernel(root: Path) -> None:
    initramfs = root / "etc/initramfs-tools"
    with (initramfs / "modules").open("a") as f:
        f.write("".join(m + "\n" for m in INITRD_MODULES))
    conf = initramfs / "initramfs.conf"
    lines = conf.read_text().splitlines()
    # MODULES=list keeps the initrd small (only the listed modules and their
    # dependencies); gzip because it is quick to build and to unpack under TCG.
    overrides = {"MODULES": "list", "COMPRESS": "gzip"}
    kept = [ln for ln in lines if ln.split("=", 1)[0] not in overrides]
    conf.write_text("\n".join(kept + [f"{k}={v}" for k, v in overrides.items()]) + "\n")
    with _proc_mounted(root):
        _chroot(root, "apt-get", "install", "-y", "--no-install-recommends", KERNEL_PACKAGE)
    _chroot(root, "apt-get", "clean")


def _export_boot_files(root: Path, dest: Path) -> None:
    # Copied out of the tree so QEMU reads them without reaching into root/.
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise ImageBuildError(f"expected one kernel and one initrd in {root}/boot, found {kernels} {initrds}")
    shutil.copy2(kernels[0], dest / "vmlinuz")
    shutil.copy2(initrds[0], dest / "initrd.img")


# Everything that decides the image's content. Its source is hashed, so a
# change to any of these functions or constants yields a new cache entry.
_RECIPE = (_run, _chroot, _proc_mounted, _debootstrap, _prepare_headless, _install_kernel, _export_boot_files)


def recipe_hash() -> str:
    h = hashlib.sha256()
    for fn in _RECIPE:
        h.update(inspect.getsource(fn).encode())
    data = [SUITE, BASE_PACKAGES, KERNEL_PACKAGE, INITRD_MODULES, MACHINE_ID, MASKED_UNITS]
    h.update(json.dumps(data).encode())
    return h.hexdigest()[:16]


def _paths(entry: Path) -> GuestImage:
    return GuestImage(root=entry / "root", vmlinuz=entry / "vmlinuz", initrd=entry / "initrd.img")


def _remove_tree(path: Path) -> None:
    # A build killed mid-way can leave /proc mounted inside its temp tree;
    # never recurse into a live mount.
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mnt = line.split()[1]
        if mnt.startswith(str(path) + "/"):
            subprocess.run(["umount", "-l", mnt], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _build(entry: Path) -> float:
    """Build into a temp dir next to entry and rename it into place."""
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        root = tmp / "root"
        _debootstrap(root)
        _prepare_headless(root)
        _install_kernel(root)
        _export_boot_files(root, tmp)
        seconds = time.monotonic() - started
        info = {"recipe_hash": entry.name, "build_seconds": round(seconds, 1), "suite": SUITE}
        (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        # rename(2) is atomic: readers see either no entry or a whole one.
        os.rename(tmp, entry)
    except BaseException:
        _remove_tree(tmp)
        raise
    return seconds


def ensure_image() -> GuestImage:
    """Return the cached image for the current recipe, building it once if missing."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the guest image needs root (debootstrap, chroot, mount)")
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} not found; apt-get install debootstrap")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    entry = CACHE_ROOT / recipe_hash()
    if (entry / "build-info.json").is_file():
        return _paths(entry)
    # One builder at a time: parallel test runs wait for the first build.
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (entry / "build-info.json").is_file():
            for stale in CACHE_ROOT.glob(".tmp-*"):
                _remove_tree(stale)  # left by a killed build; we hold the lock
            seconds = _build(entry)
            global BUILT_THIS_RUN
            BUILT_THIS_RUN = seconds
            print(f"kvmpod-e2e: cold guest image build took {seconds:.1f} s -> {entry}", file=sys.stderr)
    return _paths(entry)


def build_seconds(image: GuestImage) -> float:
    """The cold build time recorded when the image was made."""
    info = json.loads((image.root.parent / "build-info.json").read_text())
    return float(info["build_seconds"])


if __name__ == "__main__":
    img = ensure_image()
    print(f"root={img.root}\nvmlinuz={img.vmlinuz}\ninitrd={img.initrd}\nbuild_seconds={build_seconds(img)}")
