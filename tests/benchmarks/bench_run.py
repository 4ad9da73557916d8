"""How long `kvmpod run` takes for a pod whose one app prints a line and exits at once, warm image.

Prints figures, asserts nothing (speed is measured, never asserted). Needs root, QEMU and the
stage1 image (built first if missing, outside the measurement). Run from the repository root:

    sudo .venv/bin/python tests/benchmarks/bench_run.py [--runs N]

Host side: from starting `kvmpod run` to the app's first output line on its stdout, and to its end.
Guest side, from the app's own lines (each stamped with the guest's uptime) and the console.

A pod's guest journal is volatile (in the guest's RAM, issue 20), so the default runs have none to
read afterwards. `--kept` adds a column of kept pods (`kvmpod run --keep`), whose journal is persistent
and read with journalctl -D after the pod's end: the kernel and initramfs until systemd starts in the
real root, systemd's generators and unit loading (from "running in system mode" to "Queued start job
for default target": kvmpod-generator runs inside this span, with systemd's own generators), then
until the app's unit started, and the shutdown; also what a kept pod costs on disk. A kept pod's
journal is flushed over 9p before its apps start (the diagnostic mode): its first line comes later
than a default pod's. `--blame`, `--keep-journals` and `--both-ways` read journals, so they imply
kept pods (--both-ways: both of its ways kept, --blame/--keep-journals: the --kept column).

`--both-ways` alternates runs of the two ways kvmpod-generator has (issue 12): unpacking the units
`kvmpod run` rendered on the host (its default), and the Python generator rendering them in the guest
(forced by a last `kvmpod.units=python` on the kernel command line, which the launcher cannot use).
It boots with systemd.log_level=debug to read kvmpod-generator's own span from the journal: from
systemd's "About to execute …/kvmpod-generator" to its "…/kvmpod-generator succeeded."

The floor (issue 20), run beside each kvmpod run: the same QEMU options as that pod's argv up to its
console (machine, accelerator, CPUs, memory), the same kernel and initrd, the stage1 root on the same
9p options (read-only), the same kernel command line without kvmpod's and systemd's words, and
`init=/bin/busybox` running `sh -c 'echo LINE $(cat /proc/uptime); poweroff -f'`: what a pod's start
is held against. Its phases: QEMU started -> the line on the serial console (host clock), of which the
kernel and initramfs until init (the guest's uptime in the line), then the line -> QEMU gone.

The app comes from an image in a private image store (busybox and a copy of this host's Python
standard library, fetched before the measurement), so its rootfs is an overlay of the stored image
(issue 20); printed beside it: what a copy of that rootfs costs, which every pod paid before.
`--dir-app` runs the busybox directory instead (copied per pod, as `--app DIR` always is).

Peak host memory of a running pod: every process under `kvmpod run` (the supervisor, QEMU,
virtiofsd), their resident memory summed every 0.1 s, the largest sum; kvmpod run's own Python apart.
The app also prints the guest's used memory (MemTotal - MemAvailable) while it runs.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "generator"))

MARKS = {
    "systemd started": re.compile(r"systemd\[1\]: systemd \d+.* running in system mode"),
    "generators and unit loading done": re.compile(r"systemd\[1\]: Queued start job for default target"),
    "app started": re.compile(r"systemd\[1\]: Started hello\.service"),
    "app output": re.compile(r"hello\[\d+\]: hi from hello"),
    "app exited": re.compile(r"systemd\[1\]: hello\.service: Deactivated successfully"),
    "journal stopped": re.compile(r"systemd-journald\[\d+\]: Journal stopped"),
}
GENERATOR = "/usr/lib/systemd/system-generators/kvmpod-generator"
SPAN = {"generator started": re.compile(rf"About to execute {re.escape(GENERATOR)}"),
        "generator done": re.compile(rf"{re.escape(GENERATOR)} succeeded")}
WAYS = {"prerendered": "", "python": "kvmpod.units=python"}
DEBUG = "systemd.log_level=debug"


# systemd[1]'s lines about a unit's job: "Starting UNIT - Description...", "Started/Finished UNIT - ...",
# "Stopping UNIT - ...", "Stopped UNIT - ..." (the text, not MESSAGE_ID=: the lines systemd logs before
# journald runs reach the journal through the kernel's buffer without their fields).
JOB_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] \S+ systemd\[1\]: (Starting|Started|Finished|Stopping|Stopped|Mounting|Mounted|"
                      r"Unmounting|Unmounted) (\S+\.(?:service|mount|socket|target|swap|path|timer|slice))\b")
BEGINS = {"Starting": "start", "Mounting": "start", "Stopping": "stop", "Unmounting": "stop"}
ENDS = {"Started": "start", "Finished": "start", "Mounted": "start", "Stopped": "stop", "Unmounted": "stop"}


def journal_blame(rootfs: Path) -> dict[str, list[tuple[float, float, str]]]:
    """systemd-analyze blame from a kept journal (the guest is gone): for each unit whose job systemd
    logged, (began, seconds, unit) of its start job and of its stop job, on the guest's monotonic clock."""
    text = subprocess.run(["journalctl", "-D", str(rootfs / "var/log/journal"), "-o", "short-monotonic",
                           "--no-pager"], capture_output=True, text=True).stdout
    began: dict[tuple[str, str], float] = {}
    out: dict[str, list[tuple[float, float, str]]] = {"start": [], "stop": []}
    for line in text.splitlines():
        match = JOB_LINE.match(line)
        if not match:
            continue
        at, verb, unit = float(match.group(1)), match.group(2), match.group(3)
        if verb in BEGINS:
            began.setdefault((BEGINS[verb], unit), at)
        elif (ENDS[verb], unit) in began:
            out[ENDS[verb]].append((began[(ENDS[verb], unit)], at - began.pop((ENDS[verb], unit)), unit))
    return out


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


FLOOR_LINE = "kvmpod-floor"
# The app's line, then the guest's memory in use (kB) while the pod runs: read by the benchmark only.
# Each line carries the guest's uptime when the app wrote it (the journal stamps a line when journald
# reads it, which can be seconds later while journald is busy, e.g. flushing): "app-done UPTIME" is
# the app's last act, the start of its pod's end.
APP_SCRIPT = ("read up rest < /proc/uptime; echo hi from hello $up; "
              "busybox awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print \"guest-used-kib\", t-a}' "
              "/proc/meminfo; read up rest < /proc/uptime; echo app-done $up")


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PeakMemory(threading.Thread):
    """The largest sum of the resident memory of every process under `pid` (not pid itself)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.own_peak_kib, self.done = pid, 0, 0, threading.Event()
        self.last_seen = None  # monotonic time the pod's processes were last seen (they end before run)

    def run(self) -> None:
        while not self.done.is_set():
            children = _descendants(self.pid)
            if children:
                self.last_seen = time.monotonic()
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(p) for p in children))
            self.own_peak_kib = max(self.own_peak_kib, _rss_kib(self.pid))
            self.done.wait(0.1)


def floor_argv(kvmpod_argv: list[str], stage1_root: str, kernel: str, initrd: str | None) -> list[str]:
    """The floor's QEMU command: kvmpod's options up to its console, the same kernel, initrd, 9p root
    options and command line (less kvmpod's and systemd's words), init a shell line that powers off."""
    from kvmpod.host.hypervisor.argv import hypervisor_part
    from kvmpod.host.hypervisor.volumes import ROOT_SECURITY_MODEL, qemu_9p_args

    own = hypervisor_part(kvmpod_argv)
    head = own[:own.index("-chardev")]
    params = own[own.index("-append") + 1].split()
    kept = [w for w in params if not w.startswith(("kvmpod.", "systemd.", "ip=", "net.ifnames=")) and w != "rw"]
    init = f'init=/bin/busybox -- sh -c "echo {FLOOR_LINE} $(cat /proc/uptime); poweroff -f"'
    tag = next(w.split("=", 1)[1] for w in params if w.startswith("root="))
    argv = head + ["-serial", "stdio", "-kernel", kernel]
    if initrd:
        argv += ["-initrd", initrd]
    argv += ["-append", " ".join(kept + ["ro", init])]
    return argv + qemu_9p_args("root", stage1_root, tag, ROOT_SECURITY_MODEL, read_only=True)


def floor_run(argv: list[str]) -> dict[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    line_at = uptime = None
    for line in proc.stdout:
        if line_at is None and line.startswith(FLOOR_LINE):
            line_at = time.monotonic() - started
            uptime = float(line.split()[1])
    proc.wait()
    ended = time.monotonic() - started
    if line_at is None:
        raise SystemExit(f"the floor printed no line (QEMU exited {proc.returncode}): {' '.join(argv)}")
    return {"floor: QEMU start -> the line (host)": line_at,
            "floor: guest: kernel and initramfs -> init (uptime in the line)": uptime,
            "floor: the line -> QEMU gone (host)": ended - line_at,
            "floor: QEMU start -> QEMU gone (host)": ended}


def _console_power_down(console: Path) -> float | None:
    """The guest clock of the kernel's "reboot: Power down" on the console, the guest's very end."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"^\[\s*(\d+\.\d+)\] reboot: Power down", text, re.M)
    return float(found[-1]) if found else None


def print_blame(label: str, rootfs: Path, top: int) -> None:
    blame = journal_blame(rootfs)
    for kind in ("start", "stop"):
        rows = sorted(blame[kind], key=lambda r: -r[1])[:top]
        print(f"  {label}: the {top} longest {kind} jobs (guest clock: began at, seconds, unit)")
        for at, seconds, unit in rows:
            print(f"    {at:8.2f} {seconds:7.2f}  {unit}")


STORE_REF = "kvmpod.bench/hello:1"


def store_image(work: Path, busybox_root: Path) -> tuple[str, dict[str, float]]:
    """The app as an image in a private image store: busybox and a copy of this host's Python standard
    library (a rootfs of some size and 1,500 files, like a small application image), fetched before
    the measurement. Returns its reference and what a copy of its rootfs costs: what every pod paid
    for it before the store's images became overlay lower layers (issue 20)."""
    from kvmpod.host.images.oci_writer import write_oci_layout

    root = work / "image-rootfs"
    shutil.copytree(busybox_root, root, symlinks=True)
    shutil.copytree(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}",
                    root / "usr/lib/python3", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    write_oci_layout(str(root), {"Entrypoint": ["/bin/sh", "-c"], "Cmd": [APP_SCRIPT], "Env": ["PATH=/bin"]},
                     str(work / "image-oci"), ref=STORE_REF)
    reference = f"oci:{work / 'image-oci'}:{STORE_REF}"
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_IMAGES_DIR=str(work / "images"))
    out = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "image", "fetch", reference], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kvmpod image fetch {reference}: {out.stderr}")
    [entry] = [p for p in (work / "images").iterdir() if p.name.startswith("sha256-") and p.is_dir()]
    copy = work / "copied-rootfs"
    started = time.monotonic()
    subprocess.run(["cp", "-a", "--reflink=auto", "--no-target-directory", str(entry / "rootfs"), str(copy)],
                   check=True)
    seconds = time.monotonic() - started
    du = subprocess.run(["du", "-sk", "-x", str(copy)], capture_output=True, text=True).stdout
    shutil.rmtree(copy)
    return reference, {"before: copying the app's stored rootfs for a pod (host), s": seconds,
                       "before: the app's rootfs copy on disk, MiB": int(du.split()[0]) / 1024}


def one_run(work: Path, app_image: str, kernel_params: str = "", stage1_image=None,
            keep_journal: Path | None = None, blame: int = 0, kept: bool = False) -> dict[str, float]:
    """One pod (and the floor beside it). `kept`: kvmpod run --keep, the guest's journal persistent and
    read afterwards; else the pod's default, a volatile journal (nothing of the guest to read after it)."""
    pods = work / "pods"
    pod = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "hello", "app": {"exec": ["/bin/sh", "-c", APP_SCRIPT], "user": "0", "group": "0"}}]}
    (work / "pod.json").write_text(json.dumps(pod))
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_PODS_DIR=str(pods),
               KVMPOD_EXTRA_KERNEL_PARAMS=kernel_params, KVMPOD_NET="none",  # no taps on this host
               KVMPOD_IMAGES_DIR=str(work / "images"))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(work / "pod.json"),
                             "--app", f"hello={app_image}", *(["--keep"] if kept else [])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(proc.pid)
    memory.start()
    first = guest_used = first_uptime = done_uptime = done_host = None
    for line in proc.stdout:
        if first is None and "hello[" in line:
            first = time.monotonic() - started
        if first_uptime is None and "hi from hello" in line:
            first_uptime = float(line.split()[-1])
        if "app-done" in line:
            done_uptime = float(line.split()[-1])
            done_host = time.monotonic() - started
        if "guest-used-kib" in line:
            guest_used = int(line.split()[-1])
    proc.wait()
    ended = time.monotonic() - started
    memory.done.set()
    gone = memory.last_seen - started if memory.last_seen is not None else float("nan")
    memory.join()
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"kvmpod run exited {proc.returncode}: {err}")
    [pod_dir] = list(pods.iterdir())
    state = json.loads((pod_dir / "state.json").read_text())
    own = pod_dir / "stage1/upper" if (pod_dir / "stage1/upper").is_dir() else pod_dir / "stage1/rootfs"
    marks = journal_marks(own) if kept else {}
    figures = {"kvmpod run -> first output line (host)": first or float("nan"),
               "kvmpod run -> the pod's end (host)": ended,
               "preparing the pod dir (host)": state["started"] - state["created"],
               "VM start -> first output line (host)": state.get("first_output_seconds", float("nan")),
               "peak host memory of the pod's processes, MiB": memory.peak_kib / 1024,
               "peak memory of kvmpod run's own Python, MiB": memory.own_peak_kib / 1024}
    if guest_used is not None:
        figures["guest memory in use while the app runs, MiB"] = guest_used / 1024
    previous, previous_name = 0.0, "VM start"
    for name in MARKS:
        if name in marks:
            figures[f"guest: {previous_name} -> {name}"] = marks[name] - previous
            previous, previous_name = marks[name], name
    span = journal_marks(own, SPAN) if kept else {}
    if len(span) == 2:
        figures["guest: kvmpod-generator's own run"] = span["generator done"] - span["generator started"]
    if first:
        figures["the pod's processes (QEMU, supervisor) gone -> kvmpod run returns (host)"] = ended - gone
    if done_host is not None:
        # one clock, the host's: the app's last line (printed as its last act) reaching kvmpod run's
        # stdout -> kvmpod run returns; its way from the guest to the host included, so an upper bound
        figures["the app's last line on the host -> kvmpod run returns (host)"] = ended - done_host
    power_down = _console_power_down(pod_dir / "console.log")
    if first_uptime is not None:
        figures["guest: the app wrote its first line at (its uptime)"] = first_uptime
    if power_down is not None and done_uptime is not None:
        # the guest's own clock both ends: the app's last act -> the kernel powers the VM down
        figures["guest: the app done -> power down (its uptime, the console)"] = power_down - done_uptime
        figures["the app done -> kvmpod run returns (the guest's span + QEMU gone -> run returns)"] = \
            power_down - done_uptime + (ended - gone)
    if "app exited" in marks:
        # the host's end is on another clock: the pod's end after the app's, as kvmpod run measured both
        figures["app exited -> kvmpod run returns (host, from the guest's app output line)"] = \
            ended - first - (marks["app exited"] - marks.get("app output", marks["app exited"])) \
            if first and "app output" in marks else float("nan")
    # What a kept pod costs on disk: the overlay's upper dir, or the whole copy (without --keep: gone).
    du = subprocess.run(["du", "-sk", "-x", str(pod_dir / "stage1")], capture_output=True, text=True).stdout
    if kept and du.split():
        figures["the pod's stage1 on disk after its end, MiB"] = int(du.split()[0]) / 1024
    apps = pod_dir / "stage1/apps"
    if kept and apps.is_dir():  # the app's own layer above its stored image (pods/app_root.py)
        du = subprocess.run(["du", "-sk", "-x", str(apps)], capture_output=True, text=True).stdout
        figures["  of which the app's own layer above its stored image, MiB"] = int(du.split()[0]) / 1024
    if stage1_image is not None:
        argv = json.loads((pod_dir / "argv.json").read_text())
        figures.update(floor_run(floor_argv(argv, str(stage1_image.root), str(stage1_image.vmlinuz),
                                            str(stage1_image.initrd) if stage1_image.initrd.is_file() else None)))
    if blame and kept:
        print_blame(f"{kernel_params or 'default'}, kept", own, blame)
    if keep_journal is not None and kept:
        shutil.copytree(own / "var/log/journal", keep_journal)
        if (pod_dir / "console.log").is_file():
            shutil.copy2(pod_dir / "console.log", keep_journal / "console.log")
    shutil.rmtree(pod_dir)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--also", metavar="PARAMS", action="append", default=[],
                        help="also boot with these kernel parameters (KVMPOD_EXTRA_KERNEL_PARAMS), runs alternated: "
                             "a candidate measured beside the default in one run, e.g. --also rootflags=...")
    parser.add_argument("--both-ways", action="store_true",
                        help="alternate the prerendered and the Python way, booting with systemd.log_level=debug")
    parser.add_argument("--dir-app", action="store_true",
                        help="the app from a directory (busybox, copied per pod) instead of an image in the store")
    parser.add_argument("--kept", action="store_true",
                        help="also run kept pods (kvmpod run --keep: a persistent guest journal, flushed before the "
                             "apps start), whose journal gives the guest's phases, and what they cost on disk")
    parser.add_argument("--keep-journals", metavar="DIR", type=Path,
                        help="keep each kept run's guest journal and console in DIR/<run>-<way>/ (journalctl -D); "
                             "implies --kept")
    parser.add_argument("--blame", metavar="N", type=int, default=0,
                        help="print each kept run's N longest start and stop jobs from its guest journal; implies --kept")
    args = parser.parse_args()
    from kvmpod.host.images import stage1
    from kvmpod.host.hypervisor.argv import detect_accel

    image = stage1.ensure_stage1()  # warm: built before the measurement
    # way -> (extra kernel parameters, kept): the pod's default first, then what is measured beside it
    ways = {name: (params, True) for name, params in WAYS.items()} if args.both_ways else {"default": ("", False)}
    ways.update({f"+{params}": (params, args.both_ways) for params in args.also})
    if (args.kept or args.blame or args.keep_journals) and not args.both_ways:
        ways["kept (--keep)"] = ("", True)
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-run-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        root = work / "hello"
        (root / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin/busybox")
        (root / "bin/sh").symlink_to("busybox")
        app, copy_cost = (str(root), {}) if args.dir_app else store_image(work, root)
        for run in range(args.runs):
            for n, (way, (params, kept)) in enumerate(ways.items()):
                params = f"{DEBUG} {params}".strip() if args.both_ways else params
                keep = args.keep_journals / f"{run}-{n}" if args.keep_journals and kept else None
                results[way].append({**one_run(work, app, params, image, keep, args.blame, kept), **copy_cost})
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
        med = (lambda key: statistics.median(r[key] for r in runs))
        floor = med("floor: QEMU start -> the line (host)")
        print(f"  {way}: kvmpod run -> first app line / floor's QEMU start -> its line: "
              f"{med('kvmpod run -> first output line (host)') / floor:.2f}x (target <= 2x); "
              f"VM start -> first app line / floor: {med('VM start -> first output line (host)') / floor:.2f}x; "
              f"kvmpod run -> the pod's end / floor's QEMU start -> QEMU gone: "
              f"{med('kvmpod run -> the pod' + chr(39) + 's end (host)') / med('floor: QEMU start -> QEMU gone (host)'):.2f}x")
        print(f"  {way}: the app's last line on the host -> kvmpod run returns: "
              f"{med('the app' + chr(39) + 's last line on the host -> kvmpod run returns (host)'):.2f} s (target <= 1 s)")
        end = med("kvmpod run -> the pod's end (host)")
        gen = [r[k] for r in runs for k in r if k.endswith("-> generators and unit loading done")]
        if gen:
            print(f"  {way}: share of the pod's end spent in generators and unit loading: "
                  f"{statistics.median(gen) / end:.1%}")


if __name__ == "__main__":
    main()
