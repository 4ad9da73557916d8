"""kvmpod in a guest root, driven the way a user drives it: the host helper builds the argv and
stages the manifest, the guest's own kvmpod-generator turns it into units at boot.

- install_kvmpod(): the one place that puts kvmpod into a guest root (the Debian package when the
  repository can build one, else a copy of the source tree).
- host_kvmpod(): runs the host CLI (`python3 -m kvmpod.host.cli`) from this checkout.
- Netns: a network namespace holding a tap, so QEMU's NIC never touches the host's networks.
- KeptLogs: a per-boot directory under /var/tmp/kvmpod-e2e-logs/ that survives pytest's tmp cleanup.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR_SRC = REPO / "generator"
BUILD_DEB = REPO / "packaging" / "build-deb"
LOG_ROOT = Path(os.environ.get("KVMPOD_E2E_LOGS", "/var/tmp/kvmpod-e2e-logs"))
# Per-boot copies of the guest root (~650 MB each, removed after the boot's tests).
ROOTS = Path(os.environ.get("KVMPOD_E2E_ROOTS", "/var/tmp/kvmpod-e2e-roots"))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, runs in any rootfs
# Applets linked next to busybox in each app rootfs, so scripts can call them by name.
APPLETS = ("sh", "cat", "stat", "sleep", "ls", "id", "mkdir", "printf", "echo", "sync", "touch", "rm")

GUEST_GENERATOR = "usr/lib/systemd/system-generators/kvmpod-generator"
GUEST_PACKAGE_DIR = "usr/lib/python3/dist-packages"
GUEST_CLI = "usr/bin/kvmpod"


class HarnessError(RuntimeError):
    pass


# ---------------------------------------------------------------- installing kvmpod into the guest

def install_kvmpod(root: Path, workdir: Path) -> str:
    """Install kvmpod into the guest tree at `root`; returns how, for the log.

    With packaging/build-deb in the repository: build the .deb and `dpkg -i` it in the chroot, so
    the suite tests what users install. Without it: copy generator/kvmpod into dist-packages and
    write the generator and CLI launchers the package would install.
    """
    if BUILD_DEB.exists():
        out = workdir / "deb"
        out.mkdir(exist_ok=True)
        proc = subprocess.run([str(BUILD_DEB), str(out)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"{BUILD_DEB} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().endswith(".deb")]
        if not lines or not Path(lines[-1]).is_file():
            raise HarnessError(f"{BUILD_DEB} printed no .deb path:\n{proc.stdout}\n{proc.stderr}")
        deb = Path(lines[-1])
        shutil.copy2(deb, root / "tmp" / deb.name)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        proc = subprocess.run(["chroot", str(root), "dpkg", "-i", f"/tmp/{deb.name}"], env=env,
                              capture_output=True, text=True)
        (root / "tmp" / deb.name).unlink()
        if proc.returncode != 0:
            raise HarnessError(f"dpkg -i {deb.name} in the guest root failed:\n{proc.stdout}\n{proc.stderr}")
        for path in (GUEST_GENERATOR, GUEST_CLI):
            if not (root / path).exists():
                raise HarnessError(f"{deb.name} installed no /{path}")
        return f"deb {deb.name}"
    dest = root / GUEST_PACKAGE_DIR / "kvmpod"
    shutil.copytree(GENERATOR_SRC / "kvmpod", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path, module in ((GUEST_GENERATOR, "generator_cli"), (GUEST_CLI, "cli")):
        launcher = root / path
        launcher.parent.mkdir(parents=True, exist_ok=True)
        launcher.write_text(f"#!/usr/bin/python3\nfrom kvmpod.{module} import main\nraise SystemExit(main())\n")
        launcher.chmod(0o755)
    return "source copy (no packaging/build-deb in the repository)"


# ---------------------------------------------------------------- the host helper

# kvmpod run gives a pod the `default` network (taps, nftables, ip_forward) unless told otherwise:
# the tests' pods get none, so they never touch this host's network; tests/e2e/test_net.py gives its
# pods networks inside network namespaces it makes (KVMPOD_NET set there).
HOST_NETWORK_SAFE = {"KVMPOD_NET": "none"}


def host_kvmpod(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`kvmpod ARGS` from this checkout's generator/ tree."""
    env = {**os.environ, **HOST_NETWORK_SAFE, "PYTHONPATH": str(GENERATOR_SRC), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HarnessError(f"kvmpod {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def qemu_args(common: list[str], image, console: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`kvmpod args --format json` for QEMU booting `image` (kernel, initrd) with its console written
    to `console`, 2 CPUs and 512 MiB; `common` holds --manifest, --rootfs, --uuid and the like."""
    return host_kvmpod("args", "--hypervisor", "qemu", *common, "--kernel", str(image.vmlinuz),
                       "--initrd", str(image.initrd), "--console", f"file:{console}", *extra,
                       "--cpus", "2", "--memory", "512", "--format", "json")

def drop_export(argv: list[str], tag: str) -> list[str]:
    """The argv without the -fsdev/-device pair that exports 9p tag `tag`."""
    device = [i for i, a in enumerate(argv) if a.startswith("virtio-9p-pci,") and a.endswith(f",mount_tag={tag}")]
    if len(device) != 1 or argv[device[0] - 1] != "-device" or argv[device[0] - 3] != "-fsdev":
        raise HarnessError(f"no single -fsdev/-device pair for tag {tag!r} in {argv}")
    i = device[0]
    return argv[: i - 3] + argv[i + 1:]


def argv_value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


# ---------------------------------------------------------------- app rootfs

def make_app_rootfs(root: Path, app: str) -> Path:
    """/opt/stage2/<app>/rootfs with busybox and its applet links."""
    if not BUSYBOX.is_file():
        raise HarnessError(f"{BUSYBOX} not found: apt-get install busybox-static")
    rootfs = root / "opt/stage2" / app / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("tmp", "root", "proc", "dev"):
        (rootfs / d).mkdir()
    return rootfs


def busybox_rootfs(dest: Path, applets: tuple[str, ...] = APPLETS) -> Path:
    """An app rootfs at `dest` (outside any guest root): busybox, its applet links, /tmp /proc /dev."""
    if not BUSYBOX.is_file():
        raise HarnessError(f"{BUSYBOX} not found: apt-get install busybox-static")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    for applet in applets:
        (dest / "bin" / applet).symlink_to("busybox")
    for d in ("tmp", "root", "proc", "dev"):
        (dest / d).mkdir()
    return dest


def kvmpod_cli(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """`kvmpod ARGS` from this checkout as a running process (for kvmpod run)."""
    full_env = {**os.environ, **HOST_NETWORK_SAFE, "PYTHONPATH": str(GENERATOR_SRC), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "kvmpod.host.cli", *args], env=full_env, **popen)


def install_guest_unit(root: Path, name: str, text: str, *, wanted_by: str = "multi-user.target") -> None:
    unit_dir = root / "etc/systemd/system"
    (unit_dir / name).write_text(text)
    wants = unit_dir / f"{wanted_by}.wants"
    wants.mkdir(exist_ok=True)
    (wants / name).symlink_to(f"/etc/systemd/system/{name}")


# The start of a boot's finish script: `log` to the kernel log, and wait (60 s at most) for the
# results volume, /mnt/results, to be mounted; `$r` names it.
WAIT_FOR_RESULTS = """r=/mnt/results
log() { echo "kvmpod-e2e-finish: $*" > /dev/kmsg; }
i=0
while ! grep -q " $r 9p " /proc/mounts; do
  [ $i -ge 60 ] && { log "$r never mounted"; exit 1; }
  sleep 1; i=$((i+1))
done
"""

def finish_unit(description: str, after: str, timeout_s: int, requires: str | None = None) -> str:
    """The guest unit that runs /usr/local/sbin/kvmpod-e2e-finish (a boot's checks) after `after`,
    then powers the guest off whatever happened (install it with install_guest_unit)."""
    return (f"[Unit]\nDescription=kvmpod e2e: {description}, then power off\nAfter={after}\n"
            + (f"Requires={requires}\n" if requires else "")
            + "SuccessAction=poweroff\nFailureAction=poweroff\n\n[Service]\nType=oneshot\n"
              f"ExecStart=/usr/local/sbin/kvmpod-e2e-finish\nTimeoutStartSec={timeout_s}\n")


def install_guest_script(root: Path, path: str, text: str) -> None:
    script = root / path.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text)
    script.chmod(0o755)


def processes_naming(text: str, width: int = 160) -> list[str]:
    """Every process whose command line holds `text` ("PID: its command line", cut to `width`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:width]}")
    return found


def pod_uuid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


# ---------------------------------------------------------------- network namespace

@dataclass
class Netns:
    """`ip netns add NAME` with a persistent tap `tap` holding host_ip, up. Always removed on exit."""

    name: str
    tap: str
    host_cidr: str

    def __enter__(self) -> Netns:
        for cmd in (["ip", "netns", "add", self.name],
                    ["ip", "-n", self.name, "link", "set", "lo", "up"],
                    ["ip", "-n", self.name, "tuntap", "add", "dev", self.tap, "mode", "tap"],
                    ["ip", "-n", self.name, "address", "add", self.host_cidr, "dev", self.tap],
                    ["ip", "-n", self.name, "link", "set", self.tap, "up"]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                self.__exit__()
                raise HarnessError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        # Deleting the namespace deletes the tap inside it.
        subprocess.run(["ip", "-n", self.name, "link", "delete", self.tap], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    @property
    def wrapper(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def ping(self, address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.wrapper, str(BUSYBOX), "ping", "-c", "1", "-W", "2", address],
                              capture_output=True, text=True)


# ---------------------------------------------------------------- kept logs

def kept_dir(label: str) -> Path:
    """A directory that outlives pytest's tmp_path (other runs may delete that)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = LOG_ROOT / f"{stamp}-{label}-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
