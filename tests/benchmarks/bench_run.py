"""How long `kvmpod run` takes for a pod whose one app prints a line and exits at once, warm image.

Prints figures, asserts nothing (speed is measured, never asserted). Needs root, QEMU and the
stage1 image (built first if missing, outside the measurement). Run from the repository root:

    sudo .venv/bin/python tests/benchmarks/bench_run.py [--runs N]

Host side: from starting `kvmpod run` to the app's first output line on its stdout, and to its end.
Guest side, from each run's journal (kept with --keep, read with journalctl -D): the kernel and
initramfs until systemd starts in the real root, systemd's generators and unit loading (from
"running in system mode" to "Queued start job for default target": kvmpod-generator runs inside this
span, with systemd's own generators), then until the app's unit started, and the shutdown.

`--both-ways` alternates runs of the two ways kvmpod-generator has (issue 12): unpacking the units
`kvmpod run` rendered on the host (its default), and the Python generator rendering them in the guest
(forced by a last `kvmpod.units=python` on the kernel command line, which the launcher cannot use).
It boots with systemd.log_level=debug to read kvmpod-generator's own span from the journal: from
systemd's "About to execute …/kvmpod-generator" to its "…/kvmpod-generator succeeded."
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "generator"))

MARKS = {
    "systemd started": re.compile(r"systemd\[1\]: systemd \d+.* running in system mode"),
    "generators and unit loading done": re.compile(r"systemd\[1\]: Queued start job for default target"),
    "app started": re.compile(r"systemd\[1\]: Started hello\.service"),
    "app output": re.compile(r"hello\[\d+\]: hi from hello"),
    "journal stopped": re.compile(r"systemd-journald\[\d+\]: Journal stopped"),
}
GENERATOR = "/usr/lib/systemd/system-generators/kvmpod-generator"
SPAN = {"generator started": re.compile(rf"About to execute {re.escape(GENERATOR)}"),
        "generator done": re.compile(rf"{re.escape(GENERATOR)} succeeded")}
WAYS = {"prerendered": "", "python": "kvmpod.units=python"}
DEBUG = "systemd.log_level=debug"


def journal_marks(rootfs: Path, marks: dict[str, re.Pattern] = MARKS) -> dict[str, float]:
    text = subprocess.run(["journalctl", "-D", str(rootfs / "var/log/journal"), "-o", "short-monotonic",
                           "--no-pager"], capture_output=True, text=True).stdout
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^\[\s*(\d+\.\d+)\]", line)
        if not match:
            continue
        for name, pattern in marks.items():
            if name not in found and pattern.search(line):
                found[name] = float(match.group(1))
    return found


def one_run(work: Path, busybox_root: Path, kernel_params: str = "") -> dict[str, float]:
    pods = work / "pods"
    pod = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "hello", "app": {"exec": ["/bin/sh", "-c", "echo hi from hello"], "user": "0", "group": "0"}}]}
    (work / "pod.json").write_text(json.dumps(pod))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_PODS_DIR=str(pods),
               KVMPOD_EXTRA_KERNEL_PARAMS=kernel_params)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(work / "pod.json"),
                             "--app", f"hello={busybox_root}", "--keep"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stdout:
        if first is None and "hello[" in line:
            first = time.monotonic() - started
    proc.wait()
    ended = time.monotonic() - started
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"kvmpod run exited {proc.returncode}: {err}")
    [pod_dir] = list(pods.iterdir())
    state = json.loads((pod_dir / "state.json").read_text())
    marks = journal_marks(pod_dir / "stage1/rootfs")
    figures = {"to first output line (host)": first or float("nan"), "to the pod's end (host)": ended,
               "preparing the pod dir (host)": state["started"] - state["created"]}
    previous, previous_name = 0.0, "VM start"
    for name in MARKS:
        if name in marks:
            figures[f"guest: {previous_name} -> {name}"] = marks[name] - previous
            previous, previous_name = marks[name], name
    span = journal_marks(pod_dir / "stage1/rootfs", SPAN)
    if len(span) == 2:
        figures["guest: kvmpod-generator's own run"] = span["generator done"] - span["generator started"]
    shutil.rmtree(pod_dir)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--both-ways", action="store_true",
                        help="alternate the prerendered and the Python way, booting with systemd.log_level=debug")
    args = parser.parse_args()
    from kvmpod.host.images import stage1
    from kvmpod.host.hypervisor.argv import detect_accel

    stage1.ensure_stage1()  # warm: built before the measurement
    ways = WAYS if args.both_ways else {"prerendered": ""}
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-run-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        root = work / "hello"
        (root / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin/busybox")
        (root / "bin/sh").symlink_to("busybox")
        for _ in range(args.runs):
            for way, params in ways.items():
                params = f"{DEBUG} {params}".strip() if args.both_ways else params
                results[way].append(one_run(work, root, params))
    load = os.getloadavg()[0]
    print(f"kvmpod run, one app that prints a line and exits; accelerator {detect_accel()}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; {args.runs} run(s) each, median seconds"
          + (f"; booted with {DEBUG}, runs of the two ways alternated" if args.both_ways else ""))
    names = list(dict.fromkeys(name for runs in results.values() for r in runs for name in r))
    print(f"  {'':<70} " + " ".join(f"{way:>12}" for way in ways))
    for name in names:
        cells = []
        for way in ways:
            values = [r[name] for r in results[way] if name in r]
            cells.append(f"{statistics.median(values):12.2f}" if values else f"{'-':>12}")
        print(f"  {name:<70} " + " ".join(cells))
    for way, runs in results.items():
        end = statistics.median(r["to the pod's end (host)"] for r in runs)
        gen = [r[k] for r in runs for k in r if k.endswith("-> generators and unit loading done")]
        if gen:
            print(f"  {way}: share of the pod's end spent in generators and unit loading: "
                  f"{statistics.median(gen) / end:.1%}")


if __name__ == "__main__":
    main()
