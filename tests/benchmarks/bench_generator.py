"""Benchmark kvmpod-generator: prints figures, asserts nothing (speed is not a test verdict).

    python3 tests/benchmarks/bench_generator.py [--runs N]

Reports, each as the best of N runs (the least disturbed by whatever else the machine does):
- the import cost of kvmpod.guest.generator, from `python3 -X importtime`, and its heaviest modules;
- the wall time of a whole generator process on the bundled example pod, with the interpreter
  flags the Debian package uses (-I -S) and with plain `python3`, beside `python3 -c pass`;
- the time to plan a large pod in-process (200 apps, 5 mounts each) to show how it scales.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "generator"
EXAMPLE_ROOT = SOURCE / "kvmpod/examples/appc-pod/root"


def best_wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def import_profile(runs: int, env: dict[str, str]) -> tuple[int, list[tuple[int, str]]]:
    best_total, best_rows = None, []
    for _ in range(runs):
        err = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c",
                              f"import sys; sys.path.insert(0, {str(SOURCE)!r}); import kvmpod.guest.generator"],
                             env=env, capture_output=True, text=True, check=True).stderr
        rows = []
        total = 0
        for line in err.splitlines()[1:]:
            self_us, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            rows.append((int(self_us), name.strip()))
            if name.strip() == "kvmpod.guest.generator":
                total = int(cumulative)
        if best_total is None or total < best_total:
            best_total, best_rows = total, rows
    return best_total or 0, sorted(best_rows, reverse=True)[:8]


def large_pod_plan_seconds(apps: int, mounts: int) -> float:
    sys.path.insert(0, str(SOURCE))
    from kvmpod.guest.generator import plan_pod
    from kvmpod.guest.mount_units import GuestSettings
    from kvmpod.pod.manifest import parse_pod_manifest

    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11",
                "volumes": [{"name": f"v{j}", "kind": "host", "source": f"/srv/v{j}"} for j in range(mounts)],
                "apps": [{"name": f"app{i}", "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
                          "mounts": [{"volume": f"v{j}", "path": f"/data/{j}"} for j in range(mounts)]}
                         for i in range(apps)]}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        pod = parse_pod_manifest(json.loads(json.dumps(manifest)))
        outputs = plan_pod(pod, root, GuestSettings("/etc/kvmpod/pod.json"), lambda _: None)
        elapsed = time.perf_counter() - start
    assert len(outputs) > apps * mounts
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    total, heaviest = import_profile(runs, env)
    print(f"import kvmpod.guest.generator (python3 -I -S, best of {runs}): {total / 1000:.1f} ms")
    for self_us, name in heaviest:
        print(f"  {self_us / 1000:6.1f} ms  {name}")
    generator = ["-c", f"import sys; sys.path.insert(0, {str(SOURCE)!r}); from kvmpod.guest.generator import main; "
                       f"sys.exit(main(['--dry-run', '--root', {str(EXAMPLE_ROOT)!r}]))"]
    baseline = best_wall([sys.executable, "-I", "-S", "-c", "pass"], runs, env)
    packaged = best_wall([sys.executable, "-I", "-S", *generator], runs, env)
    plain = best_wall([sys.executable, *generator], runs, env)
    print(f"python3 -I -S -c pass:                          {baseline * 1000:6.1f} ms")
    print(f"generator on the example pod, python3 -I -S:    {packaged * 1000:6.1f} ms  (as packaged)")
    print(f"generator on the example pod, plain python3:    {plain * 1000:6.1f} ms")
    seconds = large_pod_plan_seconds(200, 5)
    print(f"plan a pod of 200 apps x 5 mounts in-process:   {seconds * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
