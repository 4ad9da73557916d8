"""Several pods at once through `kvmpod run` (issue 22's "more in a benchmark"), against one pod alone.

Prints figures, asserts nothing. Each round runs one pod alone (the baseline), then N pods started
together; every pod is the same: one app (busybox from a directory) that prints a line with its
pod's name and exits. For each, from starting `kvmpod run`: its first app line and its end (host
clock); then the medians and the largest, the ratios against the pod alone, the wall time of the N
pods against N pods run one after another (N x the alone time: what running them at once buys or
costs), and the peak resident memory of all pods' processes together (QEMU, supervisors). Each
pod's output is checked to hold its own line only, and each must exit 0 (a benchmark of pods that
mix or fail measures nothing). Needs root, QEMU and the stage1 (built first, outside the figures).
On a 2-core TCG host, N pods share the cores: expect the ratios to grow with N; on KVM they
should stay near 1 up to the core count.

    .venv/bin/python tests/benchmarks/bench_load.py [--pods N] [--rounds R] [--memory MIB]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import REPO, _descendants, _rss_kib  # noqa: E402  (bench_run puts generator/ on the path)


def start_pod(work: Path, name: str, app_dir: Path, memory: int) -> tuple[subprocess.Popen, float]:
    pods = work / "pods"
    manifest = work / f"{name}.json"
    manifest.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "hello", "app": {"exec": ["/bin/sh", "-c", f"echo line from {name}"], "user": "0", "group": "0"}}]}))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_PODS_DIR=str(pods), KVMPOD_NET="none")
    return subprocess.Popen([sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(manifest),
                             "--app", f"hello={app_dir}", "--cpus", "1", "--memory", str(memory)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.monotonic()


def follow(name: str, proc: subprocess.Popen, started: float, out: dict) -> None:
    first, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if first is None and "hello[" in line:
            first = time.monotonic() - started
    err = proc.stderr.read()
    proc.wait()
    mine = [ln for ln in lines if "line from" in ln]
    if proc.returncode != 0 or not mine or any(f"line from {name}\n" not in ln for ln in mine):
        raise SystemExit(f"pod {name}: kvmpod run exited {proc.returncode}; its lines {mine}; {err[-2000:]}")
    out[name] = {"first": first, "end": time.monotonic() - started}


def run_group(work: Path, names: list[str], app_dir: Path, memory: int) -> tuple[dict, float, float]:
    """Start every pod at once; (their figures, the group's wall time, peak RSS of all pods' processes MiB)."""
    results: dict[str, dict] = {}
    began = time.monotonic()
    started = [(n, *start_pod(work, n, app_dir, memory)) for n in names]
    threads = [threading.Thread(target=follow, args=(n, p, t, results)) for n, p, t in started]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, sum(_rss_kib(c) for _, p, _ in started for c in _descendants(p.pid)))
        time.sleep(0.2)
    for t in threads:
        t.join()
    if len(results) != len(names):
        raise SystemExit("a pod failed (above)")
    return results, time.monotonic() - began, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4, help="pods at once (default 4)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (one alone, N at once); default 1")
    parser.add_argument("--memory", type=int, default=256, help="each guest's memory in MiB (default 256)")
    args = parser.parse_args()
    if args.pods < 2:
        parser.error("--pods: give at least 2")
    from kvmpod.host.images import stage1
    from kvmpod.host.hypervisor.argv import detect_accel

    stage1.ensure_stage1()  # warm: built before the figures
    alone: list[dict] = []
    together: list[dict] = []
    walls: list[float] = []
    peaks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-load-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        app = work / "hello"
        (app / "bin").mkdir(parents=True)
        subprocess.run(["cp", "/bin/busybox", str(app / "bin/busybox")], check=True)
        (app / "bin/sh").symlink_to("busybox")
        for _ in range(args.rounds):
            one, _, _ = run_group(work, ["alone"], app, args.memory)
            alone.append(one["alone"])
            group, wall, peak = run_group(work, [f"pod{i}" for i in range(args.pods)], app, args.memory)
            together.extend(group.values())
            walls.append(wall)
            peaks.append(peak)
    med = statistics.median
    print(f"kvmpod run, {args.pods} pods at once against one alone; accelerator {detect_accel()}, {os.cpu_count()} "
          f"CPUs, {args.memory} MiB and 1 vCPU per guest, load average {os.getloadavg()[0]:.1f} at the end; "
          f"{args.rounds} round(s)")
    for key, label in (("first", "kvmpod run -> first app line"), ("end", "kvmpod run -> the pod's end")):
        base = med(r[key] for r in alone)
        values = [r[key] for r in together]
        print(f"  {label:<32} alone {base:7.2f} s | at once: median {med(values):7.2f} s ({med(values) / base:.2f}x), "
              f"slowest {max(values):7.2f} s ({max(values) / base:.2f}x)")
    serial = args.pods * med(r["end"] for r in alone)
    print(f"  {args.pods} pods' wall time at once {med(walls):.2f} s against {serial:.2f} s one after another "
          f"({med(walls) / serial:.2f}x)")
    print(f"  peak resident memory of all {args.pods} pods' processes {med(peaks):.0f} MiB "
          f"({med(peaks) / args.pods:.0f} MiB a pod)")


if __name__ == "__main__":
    main()
