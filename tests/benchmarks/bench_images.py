"""Preparing a pod's app from a cached store image against today's `--app DIR` copy, side by side.

Prints figures, asserts nothing (speed is measured, never asserted). No guest boots: it measures the
host's part that differs between the two, in the same process and on the same disk, alternating:

- `--app NAME=DIR`: run.install_app copying the rootfs directory (cp -a) into a stage1 root;
- `--app NAME=oci:LAYOUT` with the image already in the store: run.parse_app_images (the store's
  lookup: the layout's index, manifest and config read and checked, the entry's lock, "already in the
  store") and run.install_app from the store entry;
- for scale, the first fetch of that image (layers read, digests checked, unpacked, converted).

    .venv/bin/python tests/benchmarks/bench_images.py [--rootfs DIR] [--runs N]

--rootfs: the tree made into an image (default /usr/lib/python3, a few thousand files: an image of
the size of a small Debian-based one's largest layer).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "generator"))

from kvmpod.host.images.oci_writer import write_oci_layout  # noqa: E402
from kvmpod.host.images.store import fetch, tree_size  # noqa: E402
from kvmpod.host.run import install_app, parse_app_images  # noqa: E402
from kvmpod.pod.manifest import parse_pod_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rootfs", default="/usr/lib/python3")
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kvmpod-bench-images-"))
    try:
        os.environ["KVMPOD_IMAGES_DIR"] = str(work / "store")
        rootfs = work / "rootfs"
        shutil.copytree(opts.rootfs, rootfs, symlinks=True)
        files = sum(len(f) + len(d) for _, d, f in os.walk(rootfs))
        print(f"image: {opts.rootfs}, {files} entries, {tree_size(str(rootfs)) / 2**20:.1f} MiB; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        started = time.monotonic()
        write_oci_layout(str(rootfs), {"Cmd": ["/bin/sh"]}, str(work / "layout"))
        print(f"writing the OCI layout (gzip): {time.monotonic() - started:.2f} s")
        started = time.monotonic()
        fetch(f"oci:{work / 'layout'}")
        print(f"first fetch (read, check, unpack, convert): {time.monotonic() - started:.2f} s")
        pod = parse_pod_manifest({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [{"name": "app"}]})
        times: dict[str, list[float]] = {"--app DIR (copy)": [], "--app oci: (cached in the store)": []}
        for run in range(opts.runs):
            for way in times:
                root = work / f"stage1-{run}-{len(times[way])}-{way[6:9]}"
                started = time.monotonic()
                if way.startswith("--app DIR"):
                    images = parse_app_images([f"app={rootfs}"], pod, lambda text: None)
                else:
                    images = parse_app_images([f"app=oci:{work / 'layout'}"], pod, lambda text: None)
                install_app(str(root), "app", images["app"], "--app app")
                times[way].append(time.monotonic() - started)
                shutil.rmtree(root)
        base = statistics.median(times["--app DIR (copy)"])
        print(f"{'way':<36} {'median':>8} {'min':>8} {'max':>8}  ratio to --app DIR ({opts.runs} runs each, alternating)")
        for way, values in times.items():
            print(f"{way:<36} {statistics.median(values):7.2f}s {min(values):7.2f}s {max(values):7.2f}s  "
                  f"{statistics.median(values) / base:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
