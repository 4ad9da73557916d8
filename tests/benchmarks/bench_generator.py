"""Benchmark kvmpod-generator's cost at boot: prints figures, asserts nothing (speed is no test verdict).

    python3 tests/benchmarks/bench_generator.py [--runs N] [--large-runs N] [--no-large] [--output-parent DIR]

The generator is benchmarked as packaged: `packaging/install-tree` into a temporary directory,
byte-compiled as the .deb's postinst does, run through its launcher (a shell script) with three
fresh output directories per run, as systemd runs generators (in /dev/shm by default: a tmpfs, like
the /run systemd gives generators). Each pod is measured both ways the launcher has: running the
Python generator (`python3 -IS`: every guest booted without `--pod-dir`), and unpacking the units
`kvmpod run` rendered on the host (kvmpod.host.pods.prerendered_units; checked to be the same files).
Printed:

- the import cost of kvmpod.guest.generator (`python3 -X importtime`, best run) and its heaviest
  modules;
- issue 12's table: for each pod, the median (and best) wall time and the peak RSS of
  kvmpod-generator (both ways) and of systemd-fstab-generator given the same mounts as fstab lines (the
  What/Where/Type/Options of the .mount units kvmpod-generator wrote for that pod), and their ratio;
  beside them the floor of any Python generator that reads JSON, `python3 -I -S -c "import json"`,
  and a bare `python3 -I -S`;
- the goals' ratios, and how the time grows from 1,050 to 2,050 mounts (linear: time per mount).

Every timed process is started the same way (posix_spawn, then waitpid) and the runs of the programs
being compared alternate, so a busy machine slows them alike. Peak RSS comes from one more run under
GNU time (Debian package `time`).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "generator"
EXAMPLE_ROOT = SOURCE / "kvmpod/examples/appc-pod/root"
LAUNCHER = "usr/lib/systemd/system-generators/kvmpod-generator"
FSTAB_GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"
GNU_TIME = "/usr/bin/time"  # Debian package `time`: the peak RSS of the measured process alone
# systemd gives generators directories in /run, a tmpfs; /dev/shm is one too.
OUTPUT_PARENT = "/dev/shm" if os.path.isdir("/dev/shm") else None

# issue 12's pods: (label, apps, host volumes); every app mounts every volume.
SIZED_PODS = [("1 app, 4 host volumes", 1, 4), ("4 apps, 6 volumes", 4, 6),
              ("20 apps, 50 volumes", 20, 50), ("40 apps, 50 volumes", 40, 50)]
LARGE_MOUNTS = 1000


def spawn(argv: list[str], env: dict[str, str]) -> float:
    """Run argv to its end, output discarded; its wall time in seconds."""
    actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} exited {os.waitstatus_to_exitcode(status)}; run it by hand to see why")
    return seconds


def peak_rss_kib(argv: list[str], env: dict[str, str]) -> int | None:
    """The process's own peak RSS, from GNU time, which forks it from a small process. (A child
    spawned by this Python would start counting from this Python's RSS: Linux keeps the
    high-water mark of the memory a process had before exec.)"""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(report.read().split()[-1])


class Program:
    """A command measured over several runs; `argv` may be a function of a fresh work directory."""

    output_parent = OUTPUT_PARENT  # where the fresh work directories are made

    def __init__(self, name: str, argv, env: dict[str, str]):
        self.name, self.argv, self.env, self.seconds, self.rss_kib = name, argv, env, [], None

    def _in_fresh_dir(self, measure):
        work = Path(tempfile.mkdtemp(prefix="kvmpod-bench-", dir=self.output_parent))
        try:
            return measure(self.argv(work) if callable(self.argv) else self.argv, self.env)
        finally:
            shutil.rmtree(work)

    def run_once(self) -> None:
        self.seconds.append(self._in_fresh_dir(spawn))

    def measure_rss(self) -> None:
        self.rss_kib = self._in_fresh_dir(peak_rss_kib)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def best_ms(self) -> float:
        return min(self.seconds) * 1000

    @property
    def cell(self) -> str:
        return f"{self.median_ms:,.1f} ms (best {self.best_ms:,.1f}), {self.rss}"

    @property
    def rss(self) -> str:
        return "RSS n/a (apt-get install time)" if self.rss_kib is None else f"{self.rss_kib / 1024:.1f} MiB"


def alternate(programs: list[Program], runs: int) -> None:
    for program in programs:
        program.measure_rss()
    for _ in range(runs):
        for program in programs:
            program.run_once()


def install_packaged(dest: Path, python: str) -> Path:
    """The package as the .deb installs it, bytecode compiled; the generator's launcher path."""
    subprocess.run([str(REPO / "packaging/install-tree"), str(dest)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "compileall", "-q", str(dest / "usr/lib/python3/dist-packages/kvmpod")], check=True)
    return dest / LAUNCHER


def launcher_python(launcher: Path) -> str:
    """The interpreter the launcher (a shell script) execs for the Python generator."""
    line = next(ln for ln in launcher.read_text().splitlines() if ln.startswith("exec ") and " -IS -c " in ln)
    return line.split()[1]


def prerendered_copy(root: Path, dest: Path) -> Path:
    """A copy of the guest root with its units rendered on the host, as `kvmpod run` leaves it: the
    archive in /var/lib/kvmpod/units and kvmpod.units=<sha256> on the (--root) kernel command line."""
    sys.path.insert(0, str(SOURCE))
    from kvmpod.host.pods.prerendered_units import render_units, store_units

    shutil.copytree(root, dest, symlinks=True)
    cmdline = (dest / "proc/cmdline").read_text() if (dest / "proc/cmdline").exists() else ""
    units = render_units(str(dest), cmdline)
    store_units(str(dest), units)
    (dest / "proc").mkdir(exist_ok=True)
    (dest / "proc/cmdline").write_text(f"{cmdline.strip()} {units.cmdline_word}".strip() + "\n")
    return dest


def make_pod_root(root: Path, apps: int, volumes: int) -> Path:
    """A guest root: the manifest where the host stages it and each app's rootfs, as /opt/stage2 has it."""
    import json

    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11",
                "volumes": [{"name": f"vol{j}", "kind": "host", "source": f"/srv/vol{j}"} for j in range(volumes)],
                "apps": [{"name": f"app{i}", "image": {"name": f"example.com/app{i}"},
                          "app": {"exec": ["/bin/app", "--serve"], "user": "0", "group": "0"},
                          "mounts": [{"volume": f"vol{j}", "path": f"/data/vol{j}"} for j in range(volumes)]}
                         for i in range(apps)]}
    (root / "etc/kvmpod").mkdir(parents=True)
    (root / "etc/kvmpod/pod.json").write_text(json.dumps(manifest, indent=2))
    for i in range(apps):
        (root / f"opt/stage2/app{i}/rootfs/bin").mkdir(parents=True)
    return root


def generator_argv(launcher: Path, root: Path):
    def argv(work: Path) -> list[str]:
        dirs = [work / d for d in ("normal", "early", "late")]
        for d in dirs:
            d.mkdir()
        return [str(launcher), "--root", str(root), *map(str, dirs)]

    return argv


def fstab_escape(field: str) -> str:
    return field.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def fstab_of_units(unit_dir: Path) -> str:
    """The mounts of kvmpod-generator's .mount units as fstab lines (fstab(5))."""
    lines = []
    for unit in sorted(unit_dir.glob("*.mount")):
        keys = dict(line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line)
        what, where = keys["What"].replace("%%", "%"), keys["Where"].replace("%%", "%")
        options = keys.get("Options", "defaults").replace("%%", "%")
        lines.append(" ".join(map(fstab_escape, (what, where, keys.get("Type", "none"), options))) + " 0 0")
    return "\n".join(lines) + "\n"


def one_run_output(launcher: Path, root: Path, scratch: Path, prerendered: bool = False) -> tuple[Path, int]:
    """One run's output directory and its number of mount units; checks which way the launcher went."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    err = subprocess.run([str(launcher), "--root", str(root), str(out)], check=True, stderr=subprocess.PIPE,
                         text=True).stderr
    if prerendered != ("unpacked the units kvmpod rendered on the host" in err):
        raise SystemExit(f"{root}: the launcher did not go the {'prerendered' if prerendered else 'Python'} way:\n{err}")
    return out, len(list(out.glob("*.mount")))


def import_profile(python: str, site_packages: Path, runs: int) -> tuple[int, list[tuple[int, str]]]:
    best_total, best_rows = None, []
    for _ in range(runs):
        err = subprocess.run([python, "-I", "-S", "-X", "importtime", "-c",
                              f"import sys; sys.path.insert(0, {str(site_packages)!r}); import kvmpod.guest.generator"],
                             capture_output=True, text=True, check=True).stderr
        rows, total = [], 0
        for line in err.splitlines()[1:]:
            self_us, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            rows.append((int(self_us), name))
            if name == "kvmpod.guest.generator":
                total = int(cumulative)
        if best_total is None or total < best_total:
            best_total, best_rows = total, rows
    return best_total or 0, sorted(best_rows, reverse=True)[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each program on a small pod (median)")
    parser.add_argument("--large-runs", type=int, default=7, help="runs on the 1,000+ mount pods")
    parser.add_argument("--no-large", action="store_true", help="skip the 1,000+ mount pods")
    parser.add_argument("--output-parent", default=OUTPUT_PARENT,
                        help=f"where the fresh output directories are made (default: {OUTPUT_PARENT}, a tmpfs "
                             "like the /run systemd gives generators)")
    options = parser.parse_args()
    Program.output_parent = options.output_parent
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           # systemd-fstab-generator reads these instead of /etc/fstab and /proc/cmdline.
           "SYSTEMD_PROC_CMDLINE": "", "SYSTEMD_IN_INITRD": "0"}

    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-") as tmp:
        scratch = Path(tmp)
        launcher = install_packaged(scratch / "install", launcher_python(REPO / "packaging/launchers/kvmpod-generator"))
        python = launcher_python(launcher)
        site_packages = scratch / "install/usr/lib/python3/dist-packages"
        print(f"kvmpod-generator as packaged: {python} -I -S, bytecode compiled; output directories in "
              f"{options.output_parent}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

        total, heaviest = import_profile(python, site_packages, options.runs)
        print(f"\nimport kvmpod.guest.generator ({python} -I -S -X importtime, best of {options.runs}): "
              f"{total / 1000:.1f} ms; heaviest (self):")
        for self_us, name in heaviest:
            print(f"  {self_us / 1000:6.2f} ms  {name}")

        floor = Program("python3 -I -S -c 'import json'", [python, "-I", "-S", "-c", "import json"], env)
        bare = Program("python3 -I -S -c pass", [python, "-I", "-S", "-c", "pass"], env)
        example = Program("kvmpod-generator", generator_argv(launcher, EXAMPLE_ROOT), env)
        example_root = prerendered_copy(EXAMPLE_ROOT, scratch / "example-prerendered")
        one_run_output(launcher, example_root, scratch, prerendered=True)
        example_fast = Program("kvmpod-generator, prerendered", generator_argv(launcher, example_root), env)
        alternate([floor, bare, example, example_fast], options.runs)

        rows = []
        for label, apps, volumes in SIZED_PODS:
            if options.no_large and apps * volumes >= LARGE_MOUNTS:
                continue
            root = make_pod_root(scratch / f"pod-{apps}x{volumes}", apps, volumes)
            units, mounts = one_run_output(launcher, root, scratch)
            fstab = scratch / f"fstab-{apps}x{volumes}"
            fstab.write_text(fstab_of_units(units))
            kvmpod = Program("kvmpod-generator", generator_argv(launcher, root), env)
            fast_root = prerendered_copy(root, scratch / f"pod-{apps}x{volumes}-prerendered")
            fast_units, _ = one_run_output(launcher, fast_root, scratch, prerendered=True)
            same = subprocess.run(["diff", "-r", "-x", ".kvmpod-prerendered", str(units), str(fast_units)],
                                  stdout=subprocess.DEVNULL).returncode == 0
            if not same:
                raise SystemExit(f"the prerendered units of {label} differ from the Python generator's")
            fast = Program("kvmpod-generator, prerendered", generator_argv(launcher, fast_root), env)
            systemd = Program("systemd-fstab-generator",
                              lambda work: _fstab_argv(work), dict(env, SYSTEMD_FSTAB=str(fstab)))
            alternate([systemd, kvmpod, fast], options.large_runs if mounts >= LARGE_MOUNTS else options.runs)
            rows.append((f"{label} ({mounts:,} mounts)", mounts, systemd, kvmpod, fast))

    print(f"\nwall time, median of {options.runs} runs ({options.large_runs} for 1,000+ mounts); "
          "peak RSS of one more run, from GNU time")
    print("- Python: the launcher runs the Python generator, which reads the manifest and renders the units "
          "(every guest not booted by kvmpod run)")
    print("- prerendered: kvmpod run rendered the units on the host; the launcher (sh) unpacks them with tar")
    print("| pod | systemd-fstab-generator, same mounts as fstab lines | kvmpod-generator, Python | ratio "
          "| kvmpod-generator, prerendered | ratio |")
    print("|---|---|---|---|---|---|")
    for label, _, systemd, kvmpod, fast in rows:
        print(f"| {label} | {systemd.cell} | {kvmpod.cell} | {ratio(kvmpod, systemd)} | {fast.cell} "
              f"| {ratio(fast, systemd)} |")
    print(f"| bundled example pod ({EXAMPLE_ROOT.relative_to(REPO)}) | | {example.cell} | "
          f"{ratio(example, floor)} of the floor | {example_fast.cell} | {ratio(example_fast, floor)} of the floor |")
    print(f"| `python3 -I -S -c \"import json\"` (the floor) | | {floor.cell} | | | |")
    print(f"| `python3 -I -S -c pass` | | {bare.cell} | | | |")

    print("\ngoals (issue 12), Python / prerendered:")
    print(f"  example pod / json floor:           {ratio(example, floor)} / {ratio(example_fast, floor)}  (goal <= 1.3x)")
    if rows:
        _, _, systemd, kvmpod, fast = rows[0]
        print(f"  8-mount pod / fstab-generator:      {ratio(kvmpod, systemd)} / {ratio(fast, systemd)}  (goal <= 1.5x)")
    for label, mounts, systemd, kvmpod, fast in rows:
        if mounts >= LARGE_MOUNTS:
            print(f"  {mounts:,} mounts / fstab-generator:  {ratio(kvmpod, systemd)} / {ratio(fast, systemd)}  "
                  f"(goal < 1x); us per mount: {kvmpod.median_ms / mounts * 1000:.0f} / "
                  f"{fast.median_ms / mounts * 1000:.0f} (fstab-generator {systemd.median_ms / mounts * 1000:.0f})")
    large = [(m, k, f) for _, m, _, k, f in rows if m >= LARGE_MOUNTS]
    if len(large) == 2:
        (m1, k1, f1), (m2, k2, f2) = large
        print(f"  growth {m1:,} -> {m2:,} mounts: time x{k2.median_ms / k1.median_ms:.2f} / "
              f"x{f2.median_ms / f1.median_ms:.2f} for mounts x{m2 / m1:.2f} (linear: about equal)")
    peaks = [p.rss_kib for p in [example] + [k for _, _, _, k, _ in rows] if p.rss_kib is not None]
    fast_peaks = [p.rss_kib for p in [example_fast] + [f for *_, f in rows] if p.rss_kib is not None]
    if peaks and fast_peaks:
        print(f"  peak RSS of kvmpod-generator:       {max(peaks) / 1024:.1f} MiB / {max(fast_peaks) / 1024:.1f} MiB"
              "  (goal <= 16 MiB; prerendered: the largest of sh and tar)")


def ratio(program: Program, reference: Program) -> str:
    """Ratio of the medians, and of the best runs (the least disturbed by a busy machine)."""
    return (f"{program.median_ms / reference.median_ms:.2f}x "
            f"(best {program.best_ms / reference.best_ms:.2f}x)")


def _fstab_argv(work: Path) -> list[str]:
    dirs = [work / d for d in ("normal", "early", "late")]
    for d in dirs:
        d.mkdir()
    return [FSTAB_GENERATOR, *map(str, dirs)]


if __name__ == "__main__":
    main()
