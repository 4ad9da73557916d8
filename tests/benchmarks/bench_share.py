"""Benchmark 9p against virtio-fs for one host directory, from inside one real guest: prints
figures, asserts nothing.

    python3 -m tests.benchmarks.bench_share [--mib 256] [--files 10000]      (root; from the repo root)

One boot of the e2e guest image (tests/e2e/guestimage.py) with the same host directory shared both
ways: as kvmpod exports a volume over virtio-fs (`kvmpod args --share virtiofs`, virtiofsd started
by kvmpod.host.hypervisor.supervisor) and, beside it, over 9p as kvmpod exports volumes by default (the same
-fsdev/-device, security model mapped-xattr, and the guest's 9p mount options). A Python script in
the guest then measures, on each mount: sequential write (fsync'd) and read (after dropping the
guest's caches) of a file of --mib MiB, and creating, stat'ing and removing --files small files.
Under TCG the absolute numbers mean little; the accelerator's name is printed with them.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "generator"))

from kvmpod.guest.mount_units import ninep_mount_options  # noqa: E402
from kvmpod.host.hypervisor.volumes import DEFAULT_SECURITY_MODEL, qemu_9p_args  # noqa: E402
from tests.e2e import boot, guestimage  # noqa: E402
from tests.e2e.kvmpod_guest import (argv_value, host_kvmpod, install_guest_script, install_guest_unit,  # noqa: E402
                                    install_kvmpod, make_app_rootfs, pod_uuid, write_json)

GUEST_BENCH = r'''#!/usr/bin/python3
import json, os, sys, time
mib, files = int(sys.argv[1]), int(sys.argv[2])
chunk = b"\xa5" * (1 << 20)
def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
def bench(d):
    r = {}
    big = os.path.join(d, "big")
    t = time.monotonic()
    fd = os.open(big, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(mib):
        os.write(fd, chunk)
    os.fsync(fd); os.close(fd)
    r["write_mib_s"] = mib / (time.monotonic() - t)
    drop()
    t = time.monotonic()
    fd = os.open(big, os.O_RDONLY)
    while os.read(fd, 1 << 20):
        pass
    os.close(fd)
    r["read_mib_s"] = mib / (time.monotonic() - t)
    os.unlink(big)
    small = os.path.join(d, "small")
    os.mkdir(small)
    names = [os.path.join(small, f"f{i}") for i in range(files)]
    t = time.monotonic()
    for n in names:
        fd = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644); os.write(fd, b"x"); os.close(fd)
    r["create_s"] = time.monotonic() - t
    drop()
    t = time.monotonic()
    for n in names:
        os.stat(n)
    r["stat_s"] = time.monotonic() - t
    t = time.monotonic()
    for n in names:
        os.unlink(n)
    r["remove_s"] = time.monotonic() - t
    os.rmdir(small)
    return r
os.makedirs("/mnt/bench9p", exist_ok=True)
os.system("mount -t 9p -o @OPTIONS@ bench9p /mnt/bench9p")
out = {"9p": bench("/mnt/bench9p"), "virtiofs": bench("/mnt/benchvfs")}
with open("/var/tmp/kvmpod-bench.json", "w") as f:
    json.dump(out, f)
'''

UNIT = """[Unit]
Description=kvmpod share benchmark, then power off
After=mnt-benchvfs.mount
Requires=mnt-benchvfs.mount
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kvmpod-bench @MIB@ @FILES@
TimeoutStartSec=infinity
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    image = guestimage.ensure_image()
    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-", dir="/var/tmp") as work:
        work = Path(work)
        shared = work / "shared"
        shared.mkdir()
        pod = {"acKind": "PodManifest", "acVersion": "0.8.11",
               "apps": [{"name": "idle", "app": {"exec": ["/bin/busybox", "true"], "user": "0", "group": "0"},
                         "mounts": [{"volume": "benchvfs", "path": "/b"}]}],
               "volumes": [{"name": "benchvfs", "kind": "host", "source": str(shared)}]}
        pod_file = write_json(work / "pod.json", pod)
        with boot.private_root(image, work / "root") as root:
            install_kvmpod(root, work)
            make_app_rootfs(root, "idle")
            install_guest_script(root, "/usr/local/sbin/kvmpod-bench",
                                 GUEST_BENCH.replace("@OPTIONS@", ninep_mount_options(None, read_only=False)))
            install_guest_unit(root, "kvmpod-bench.service",
                               UNIT.replace("@MIB@", str(args.mib)).replace("@FILES@", str(args.files)))
            common = ["--manifest", str(pod_file), "--rootfs", str(root), "--uuid", pod_uuid()]
            host_kvmpod("stage", *common)
            console = work / "console.log"
            out = host_kvmpod("args", "--hypervisor", "qemu", *common, "--kernel", str(image.vmlinuz),
                              "--initrd", str(image.initrd), "--console", f"file:{console}", "--share", "virtiofs",
                              "--unsafe-volume-writes", "--cpus", "2", "--memory", "1024", "--format", "json")
            argv = json.loads(out.stdout) + qemu_9p_args("bench9p", str(shared), "bench9p", DEFAULT_SECURITY_MODEL,
                                                         read_only=False)
            accel = argv_value(argv, "-accel")
            seconds = boot.run_until_poweroff(argv, root, work, console, accel, timeout=args.timeout)
            results = json.loads((root / "var/tmp/kvmpod-bench.json").read_text())
    print(f"accelerator: {accel}; guest ran {seconds:.0f} s; {args.mib} MiB file, {args.files} small files; "
          f"9p: {ninep_mount_options(None, False)}, security_model={DEFAULT_SECURITY_MODEL}; virtio-fs: virtiofsd "
          f"cache=auto")
    print(f"{'':<22}{'9p':>12}{'virtio-fs':>12}{'virtio-fs/9p':>14}")
    rows = [("seq write MiB/s", "write_mib_s", True), ("seq read MiB/s", "read_mib_s", True),
            ("create files s", "create_s", False), ("stat files s", "stat_s", False), ("remove files s", "remove_s", False)]
    for label, key, higher_better in rows:
        a, b = results["9p"][key], results["virtiofs"][key]
        speedup = b / a if higher_better else a / b
        print(f"{label:<22}{a:>12.2f}{b:>12.2f}{speedup:>13.2f}x")
    print("(last column: how many times faster virtio-fs is)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
