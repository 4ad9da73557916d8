"""Boot a guest root directory under QEMU with the root itself as a 9p share.

One boot = one fresh copy of the cached image (fresh_root), one QEMU run with
a hard timeout, then the guest journal dumped to a file for diagnosis.
qemu_argv() is the only place that knows QEMU's syntax, so it can be swapped
for the project's host helper (`kvmpod args --hypervisor qemu`) later.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .guestimage import GuestImage

QEMU = "qemu-system-x86_64"
ROOT_TAG = "rootfs"  # must not start with /dev/: Debian's initramfs would wait for a block device
DEFAULT_TIMEOUT = 300.0  # TCG boots take ~20 s, but one was seen at 100 s
CONSOLE_TAIL_LINES = 60


class BootError(RuntimeError):
    """The guest did not boot and power off cleanly; the message carries the console tail."""


@dataclass(frozen=True)
class Share:
    """A host directory exported to the guest over virtio-9p."""

    host_dir: Path
    tag: str
    readonly: bool = False


@dataclass(frozen=True)
class BootResult:
    accelerator: str
    seconds: float
    console_log: Path
    journal_log: Path


ArgvBuilder = Callable[..., list[str]]


def detect_accelerator() -> str:
    """'kvm' only with hardware KVM; 'tcg' otherwise.

    /dev/kvm on these machines may come from kvm_pvm, a software nested KVM on
    which a stock Debian kernel spins in its decompressor, so /dev/kvm alone is
    not enough.
    """
    modules = Path("/sys/module")
    hardware = (modules / "kvm_intel").exists() or (modules / "kvm_amd").exists()
    if Path("/dev/kvm").exists() and hardware and not (modules / "kvm_pvm").exists():
        return "kvm"
    return "tcg"


def _opt(value: str | Path) -> str:
    # QEMU splits option strings on ',' and reads ',,' as a literal comma.
    return str(value).replace(",", ",,")


def _check_tag(tag: str) -> None:
    # QEMU refuses 9p tags over 31 bytes; a comma would split the option.
    if not tag or len(tag.encode()) > 31 or "," in tag or tag.startswith("/dev/"):
        raise ValueError(f"unusable 9p mount tag {tag!r}")


def kernel_cmdline(extra: Sequence[str] = ()) -> str:
    args = [
        "console=ttyS0",
        f"root={ROOT_TAG}",
        "rootfstype=9p",
        # cache=loose booted in ~19 s against ~26 s for cache=mmap.
        "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose",
        "rw",
        "panic=1",  # with -no-reboot a panic ends QEMU instead of hanging
        *extra,
    ]
    return " ".join(args)


def qemu_argv(
    *,
    kernel: Path,
    initrd: Path,
    root: Path,
    shares: Sequence[Share],
    console_log: Path,
    accelerator: str,
    cmdline_extra: Sequence[str] = (),
) -> list[str]:
    """The whole QEMU command line, one option and its value per line."""
    for path in (kernel, initrd):
        if "," in str(path):
            raise ValueError(f"QEMU cannot take a comma in -kernel/-initrd paths: {path}")
    argv = [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-machine", "q35",
        "-accel", accelerator,
        "-cpu", "host" if accelerator == "kvm" else "max",
        "-smp", "2",
        "-m", "512",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", kernel_cmdline(cmdline_extra),
        "-chardev", f"file,id=console,path={_opt(console_log)}",
        "-serial", "chardev:console",
    ]  # fmt: skip
    exports = [Share(root, ROOT_TAG), *shares]
    for i, share in enumerate(exports):
        _check_tag(share.tag)
        fsdev = f"local,id=fs{i},path={_opt(share.host_dir)},security_model=none"
        if share.readonly:
            fsdev += ",readonly=on"
        argv += ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]
    return argv


def fresh_root(image: GuestImage, dest: Path) -> Path:
    """Copy the cached root to dest so a boot never writes into the cache.

    A full copy rather than an overlayfs: it leaves no mount behind when a test
    is killed, and it is the plain-directory 9p export that is known to boot.
    --reflink=auto makes it near-free on btrfs/xfs; on ext4 it is a real copy.
    """
    if dest.exists():
        raise FileExistsError(dest)
    subprocess.run(["cp", "-a", "--reflink=auto", str(image.root), str(dest)], check=True)
    return dest


@contextlib.contextmanager
def private_root(image: GuestImage, dest: Path) -> Iterator[Path]:
    """fresh_root, removed on exit: ~650 MB per boot, while the logs kept beside it suffice."""
    try:
        yield fresh_root(image, dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def dump_journal(root: Path, out: Path) -> Path:
    """Write the guest's persistent journal as text, for failure diagnosis."""
    journal_dir = root / "var/log/journal"
    argv = ["journalctl", "-D", str(journal_dir), "--no-pager", "-o", "short-monotonic"]
    with out.open("w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            f.write(f"\n[journalctl exited {proc.returncode}]\n")
    return out


def console_tail(console_log: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    if not console_log.exists():
        return "(no console log)"
    text = console_log.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def boot(
    image: GuestImage,
    root: Path,
    shares: Sequence[Share],
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cmdline_extra: Sequence[str] = (),
    argv_builder: ArgvBuilder = qemu_argv,
) -> BootResult:
    """Boot root until the guest powers off; raise BootError on timeout, panic or QEMU error.

    The journal is dumped to workdir/journal.txt whatever the outcome.
    """
    if shutil.which(QEMU) is None:
        raise BootError(f"{QEMU} not found; apt-get install qemu-system-x86")
    accelerator = detect_accelerator()
    print(f"kvmpod-e2e: booting with accelerator {accelerator}", file=sys.stderr)
    console_log = workdir / "console.log"
    journal_log = workdir / "journal.txt"
    argv = argv_builder(
        kernel=image.vmlinuz,
        initrd=image.initrd,
        root=root,
        shares=shares,
        console_log=console_log,
        accelerator=accelerator,
        cmdline_extra=cmdline_extra,
    )
    seconds = run_until_poweroff(argv, root, workdir, console_log, accelerator, timeout=timeout)
    return BootResult(accelerator=accelerator, seconds=seconds, console_log=console_log, journal_log=journal_log)


def run_until_poweroff(
    argv: Sequence[str],
    root: Path,
    workdir: Path,
    console_log: Path,
    accelerator: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    wrapper: Sequence[str] = (),
) -> float:
    """Run a whole QEMU argv (prefixed by `wrapper`, e.g. `ip netns exec NS`) until the guest
    powers off; return the seconds it ran, or raise BootError on timeout, panic or QEMU error.

    `ip netns exec` execs QEMU in its own process, so killing the child kills QEMU.
    The journal of `root` is dumped to workdir/journal.txt whatever the outcome.
    """
    if shutil.which(argv[0]) is None:
        raise BootError(f"{argv[0]} not found; apt-get install qemu-system-x86")
    journal_log = workdir / "journal.txt"
    full = [*wrapper, *argv]
    (workdir / "qemu.argv").write_text("\n".join(full) + "\n")
    qemu_stderr = workdir / "qemu.stderr"
    started = time.monotonic()
    with qemu_stderr.open("w") as err:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            returncode = proc.wait(timeout=timeout)
            failure = None if returncode == 0 else f"QEMU exited {returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failure = f"guest did not power off within {timeout:.0f} s (QEMU killed)"
        except BaseException:
            # e.g. Ctrl-C in pytest: never leave a QEMU running behind us.
            proc.kill()
            proc.wait()
            raise
    seconds = time.monotonic() - started
    dump_journal(root, journal_log)
    console = console_log.read_text(errors="replace") if console_log.exists() else ""
    if failure is None and "Kernel panic" in console:
        failure = "guest kernel panicked"
    if failure is not None:
        raise BootError(
            f"{failure} after {seconds:.1f} s with accelerator {accelerator}\n"
            f"QEMU stderr: {qemu_stderr.read_text().strip() or '(empty)'}\n"
            f"journal: {journal_log}\nconsole: {console_log}, last lines:\n{console_tail(console_log)}"
        )
    print(f"kvmpod-e2e: guest ran {seconds:.1f} s under {accelerator}", file=sys.stderr)
    return seconds
