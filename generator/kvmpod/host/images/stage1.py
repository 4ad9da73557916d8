"""The stage1 image every pod boots: `kvmpod stage1 build`.

Two cached layers, each a plain directory tree booted as a 9p root, content-addressed:

- the **base** (``CACHE_ROOT/<recipe hash>/``): a Debian bookworm systemd root made by debootstrap,
  with the 9p/virtio modules in a gzip initrd, and the kernel and initrd copied out of it. The hash
  covers the recipe's source (the functions in _RECIPE and the constants), so editing the recipe
  makes a new base and an unchanged recipe never rebuilds. The e2e suite boots it with kvmpod
  installed per boot (tests/e2e).
- the **stage1** (``CACHE_ROOT/stage1-<hash of base and .deb>/``): a copy of the base with this
  checkout's own kvmpod .deb installed (packaging/build-deb) and the pod settings kvmpod run relies
  on (journald's TTYPath for the apps' output). `kvmpod run` copies its root per pod; nothing ever
  writes into a cached entry.

One builder at a time (a lock file in CACHE_ROOT); a build goes to a temp dir renamed into place, so
a reader sees a whole entry or none. Progress goes to stderr, each step with its elapsed time.
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

from ..linux.parent_death import die_with_parent
from . import apps_port, stage1_cache, stage1_trim
from .installed_tree import InstalledTree, NotInstalled, installed_tree

SUITE = "bookworm"
MIRROR_ENV = "KVMPOD_E2E_MIRROR"
# The e2e suite's names are kept: its cache is the product's cache (one base image on a machine).
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
    # /bin/busybox, static: bound into an app's root to pass environment names systemd 252 drops
    # (with "." or "-"; guest/environment_helper.py). Without it such a pod is refused.
    "busybox-static",
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
# When set, each build step prints "kvmpod stage1: STEP ... (12.3 s)" to stderr.
PROGRESS = True


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


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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


@contextlib.contextmanager
def _step(what: str, since: float) -> Iterator[None]:
    """Progress on stderr: the step, then its end with the time since the build began."""
    if PROGRESS:
        print(f"kvmpod stage1: {what} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    yield
    if PROGRESS:
        print(f"kvmpod stage1: {what}: done in {time.monotonic() - t0:.1f} s "
              f"({time.monotonic() - since:.1f} s since the build began)", file=sys.stderr, flush=True)


def _build(entry: Path) -> float:
    """Build into a temp dir next to entry and rename it into place."""
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        root = tmp / "root"
        with _step("debootstrap bookworm (minbase, systemd)", started):
            _debootstrap(root)
        with _step("headless settings", started):
            _prepare_headless(root)
        with _step("kernel and initrd with the 9p modules", started):
            _install_kernel(root)
        _export_boot_files(root, tmp)
        stage1_cache.write_contents(tmp)  # what was built; build-info.json (the completion mark) last
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
    if stage1_cache.problem(entry) is None:  # the usual case, without waiting for the lock
        stage1_cache.mark_used(entry)
        return _paths(entry)
    # One builder at a time: parallel test runs wait for the first build. Checked under the lock:
    # a killed or damaged build is never returned (stage1_cache).
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stage1_cache.usable(entry, _say):
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




# ---------------------------------------------------------------- the stage1 layer: kvmpod installed

REPO = Path(__file__).resolve().parents[4]  # a checkout: generator/kvmpod/host/images/stage1.py
BUILD_DEB = REPO / "packaging" / "build-deb"
# journald copies the lines of units with StandardOutput=journal+console (kvmpod's apps) to its
# TTYPath, formatted "[  12.345678] app[42]: line". kvmpod run gives the VM a second serial port for
# them (the first is the console), so the host reads the apps' output and nothing else there.
APPS_TTY = apps_port.APPS_TTY  # with CTS flow control on, so no line loses its tail (apps_port.py)
JOURNALD_DROPIN = "etc/systemd/journald.conf.d/50-kvmpod-apps.conf"
# No rate limit: journald's default (10,000 messages per 30 s per unit) drops an app's lines past it,
# and a dropped line never reaches the host either (an e2e boot lost 2,327 of an app's 12,000 lines).
# An app's output is the pod's data, not system noise; what bounds it is the host's log cap
# (pods/capped_log.py) and the guest's RAM bound on its volatile journal (stage1_trim.py).
JOURNALD_SETTINGS = f"""# kvmpod: the apps' output (StandardOutput=journal+console) goes to the host on its own port
[Journal]
TTYPath={APPS_TTY}
# every line an app prints reaches the host (kvmpod/host/images/stage1.py)
RateLimitIntervalSec=0
"""
STAGE1_HOSTNAME = "kvmpod"


def checkout_deb(out: Path) -> Path:
    """Build this checkout's .deb with packaging/build-deb into `out`; its path."""
    if not BUILD_DEB.is_file():
        raise ImageBuildError(f"no {BUILD_DEB}: kvmpod is not running from a checkout; give the package "
                              f"with --deb FILE (packaging/build-deb OUTDIR makes one)")
    proc = subprocess.run([str(BUILD_DEB), str(out)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"{BUILD_DEB} exited {proc.returncode}: {proc.stderr.strip()}")
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().endswith(".deb")]
    if not lines or not Path(lines[-1]).is_file():
        raise ImageBuildError(f"{BUILD_DEB} printed no .deb path: {proc.stdout.strip()}")
    return Path(lines[-1])


def _install_stage1(root: Path, deb: Path | InstalledTree) -> None:
    if isinstance(deb, InstalledTree):  # an installed kvmpod: its own installed files (installed_tree.py)
        deb.install(root, _chroot)
    else:
        shutil.copy2(deb, root / "tmp" / deb.name)
        try:
            _chroot(root, "dpkg", "-i", f"/tmp/{deb.name}")
        finally:
            (root / "tmp" / deb.name).unlink()
    for path in ("usr/lib/systemd/system-generators/kvmpod-generator", "usr/bin/kvmpod"):
        if not (root / path).exists():
            raise ImageBuildError(f"{deb.name} installed no /{path}")
    dropin = root / JOURNALD_DROPIN
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(JOURNALD_SETTINGS)
    apps_port.install(root)
    (root / "etc/hostname").write_text(STAGE1_HOSTNAME + "\n")
    stage1_trim.trim(root)  # what a pod does not run (issue 20)


def stage1_hash(base_hash: str, deb: Path | InstalledTree) -> str:
    h = hashlib.sha256(base_hash.encode())
    h.update(deb.digest().encode() if isinstance(deb, InstalledTree) else hashlib.sha256(deb.read_bytes()).digest())
    h.update(inspect.getsource(_install_stage1).encode())
    h.update(inspect.getsource(stage1_trim).encode())
    h.update(inspect.getsource(apps_port).encode())
    h.update(json.dumps([APPS_TTY, JOURNALD_DROPIN, JOURNALD_SETTINGS, STAGE1_HOSTNAME]).encode())
    return h.hexdigest()[:16]


def _build_stage1(base: GuestImage, entry: Path, deb: Path | InstalledTree) -> None:
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        with _step(f"copy the base image {base.root.parent.name}", started):
            # dies with the build (PR_SET_PDEATHSIG): a killed build's copy must not go on writing
            subprocess.run(["cp", "-a", "--reflink=auto", str(base.root), str(tmp / "root")], check=True,
                           preexec_fn=die_with_parent)
        with _step(f"install kvmpod from {deb.name}", started):
            _install_stage1(tmp / "root", deb)
        shutil.copy2(base.vmlinuz, tmp / "vmlinuz")
        shutil.copy2(base.initrd, tmp / "initrd.img")
        stage1_cache.write_contents(tmp)  # what was built; build-info.json (the completion mark) last
        info = {"stage1_hash": entry.name, "base": base.root.parent.name, "deb": deb.name,
                "build_seconds": round(time.monotonic() - started, 1)}
        (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.rename(tmp, entry)
    except BaseException:
        _remove_tree(tmp)
        raise


def ensure_stage1(deb: Path | None = None, mirror: str | None = None) -> GuestImage:
    """The stage1 for this kvmpod (this checkout's .deb, else its installed files), or the given
    .deb, building what is missing.

    The base is built first when missing (minutes); the stage1 layer is a copy of it with the .deb
    installed (seconds). Returns paths inside the cache: read them, never write them.
    """
    if mirror:
        os.environ[MIRROR_ENV] = mirror
    started = time.monotonic()
    base = ensure_image()
    with tempfile_dir() as tmp:
        if deb is None and not BUILD_DEB.is_file():
            try:  # installed, not a checkout: this kvmpod's own installed files
                deb = installed_tree()
            except NotInstalled as error:
                raise ImageBuildError(str(error)) from None
        elif deb is None:
            with _step("build kvmpod's .deb (packaging/build-deb)", started):
                deb = checkout_deb(tmp)
        elif not deb.is_file():
            raise ImageBuildError(f"--deb {deb}: no such file")
        entry = CACHE_ROOT / f"stage1-{stage1_hash(base.root.parent.name, deb)}"
        if stage1_cache.problem(entry) is None:  # the usual case, without waiting for the lock
            stage1_cache.mark_used(entry)
            return _paths(entry)
        with open(CACHE_ROOT / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not stage1_cache.usable(entry, _say):
                _build_stage1(base, entry, deb)
                if PROGRESS:
                    print(f"kvmpod stage1: ready in {time.monotonic() - started:.1f} s: {entry}", file=sys.stderr)
    return _paths(entry)


@contextlib.contextmanager
def tempfile_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kvmpod-stage1-") as tmp:
        yield Path(tmp)
