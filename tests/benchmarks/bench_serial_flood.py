"""Lines lost or cut on the way from a guest's second 16550 serial port (/dev/ttyS1) to the host.

The path of a pod's apps' output (README, "the apps' output"): the guest's journald opens /dev/ttyS1,
writes one line and closes it again, for every line; QEMU's 16550 sends each byte to a socket chardev
(`socket,server=on,wait=off`) that `kvmpod run` reads. This boots the stage1's kernel and initrd with
its root on 9p (read-only) and `init=/bin/busybox` running a shell that does what journald does
(`printf LINE > /dev/ttyS1`: open, write, close per line), in phases, and a host reader that stalls
now and then, as `kvmpod run` does when the host is busy. It counts, per phase, the lines that reached
the host whole, the lines cut (bytes lost inside or at the end of a line, glued to the next) and
the lines missing. A reader that never stalls is `--stall-ms 0`.

Phases (`--ways`, in that order in one boot):
  close    journald's way, the port's termios as the kernel leaves it (the stage1's port before the fix)
  crtscts  the same after `stty -F /dev/ttyS1 crtscts` (CTS flow control: a close waits for the port)
  held     the port held open by the shell (fd 3) while it writes, so no write's close is the last;
           after crtscts, crtscts still on (the stage1's port now: images/apps_port.py)

Needs root (QEMU's 9p of the stage1 root as it is) and the stage1 image (built first if missing).
Prints figures; asserts nothing. Run from the repository root, through /work/bin/boot-slot:

    sudo .venv/bin/python tests/benchmarks/bench_serial_flood.py [--lines N] [--stall-ms MS] [--every-ms MS]
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "generator"))

WAYS = ("close", "crtscts", "held")
# A line as long as the apps' lines are ("[   12.345678] app[pid]: text", ~30 bytes): the phase and
# the line's number make each one checkable.
LINE = re.compile(r"^\[   12\.345678\] one\[195\]: (\w+) (\d+)$")
END = "flood-end"


def guest_script(ways: list[str], lines: int) -> str:
    """The shell line init runs. No double quotes (the kernel's command line parser ends a word at
    one); globbing off, for the brackets of the lines."""
    phase = (f"f(){{ i=0; while [ $i -lt {lines} ]; do i=$((i+1)); "
             f"printf '[   12.345678] one[195]: %s %s\\n' $1 $i > /dev/ttyS1; done; }}")
    steps = ["set -f", phase]
    for way in ways:
        if way == "close":
            steps.append("f close")
        elif way == "crtscts":
            steps += ["busybox stty -F /dev/ttyS1 crtscts", "f crtscts"]
        elif way == "held":
            steps += ["exec 3>/dev/ttyS1", "f held", "exec 3>&-"]
    # the end mark, sent with crtscts on (its close waits until the port has sent it all)
    steps += ["busybox stty -F /dev/ttyS1 crtscts", f"echo {END} > /dev/ttyS1",
              "busybox stty -F /dev/ttyS1 -a | busybox tr -s [:space:] [:space:]", f"echo {END}", "busybox sleep 1", "poweroff -f"]
    return "; ".join(steps)


def qemu_argv(image, sock: str, script: str) -> list[str]:
    from kvmpod.guest.mount_units import ninep_mount_options
    from kvmpod.host.hypervisor.argv import ROOT_9P_CACHE, detect_accel
    from kvmpod.host.hypervisor.volumes import ROOT_SECURITY_MODEL, qemu_9p_args

    accel = detect_accel()
    params = ["console=ttyS0", "panic=1", "root=rootfs", "rootfstype=9p",
              "rootflags=" + ninep_mount_options(ROOT_9P_CACHE, read_only=True), "ro",
              f'init=/bin/busybox -- sh -c "{script}"']
    return ["qemu-system-x86_64", "-machine", "q35", "-accel", accel, *(["-cpu", "max"] if accel == "tcg" else []),
            "-smp", "2", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "stdio",
            "-chardev", f"socket,id=apps,path={sock},server=on,wait=off", "-serial", "chardev:apps",
            "-kernel", str(image.vmlinuz), "-initrd", str(image.initrd), "-append", " ".join(params),
            *qemu_9p_args("root", str(image.root), "rootfs", ROOT_SECURITY_MODEL, read_only=True)]


class StallingReader(threading.Thread):
    """Reads the port's socket as `kvmpod run` does, but sleeps `stall` seconds every `every` seconds."""

    def __init__(self, path: str, stall: float, every: float) -> None:
        super().__init__(daemon=True)
        self.path, self.stall, self.every = path, stall, every
        self.data = bytearray()
        self.arrived: list[tuple[float, int]] = []  # (monotonic time, bytes so far)
        self.stop = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while not self.stop.is_set():
            try:
                sock.connect(self.path)
                break
            except OSError:
                time.sleep(0.005)
        sock.settimeout(0.05)
        next_stall = time.monotonic() + self.every
        while not self.stop.is_set():
            if self.stall and time.monotonic() >= next_stall:
                time.sleep(self.stall)
                next_stall = time.monotonic() + self.every
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            self.data += chunk
            self.arrived.append((time.monotonic(), len(self.data)))
        sock.close()


def count(data: bytes, arrived: list[tuple[float, int]], ways: list[str], lines: int) -> tuple[dict, list[str]]:
    """Per phase: lines whole, cut, missing, out of order, and lines a second on the host (from its
    first line's arrival to its last's); and the cut lines themselves."""
    got: dict[str, list[int]] = {w: [] for w in ways}
    cut: dict[str, int] = {w: 0 for w in ways}
    span: dict[str, list[int]] = {}
    cuts = []
    offset = 0
    for piece in data.decode("ascii", "replace").split("\n"):
        raw = piece.rstrip("\r")  # the tty's ONLCR: "\r\n"
        match = LINE.match(raw)
        if match and match.group(1) in got:
            got[match.group(1)].append(int(match.group(2)))
            span.setdefault(match.group(1), [offset, offset])[1] = offset
        elif raw and raw != END:
            # a cut line: glued to the next, or its tail lost; charge it to the phase it names, if any
            named = next((w for w in ways if f": {w} " in raw), ways[0])
            cut[named] += 1
            cuts.append(raw)
        offset += len(piece) + 1

    def when(byte: int) -> float:
        return next(t for t, total in arrived if total > byte)

    out = {}
    for way in ways:
        seen = got[way]
        first, last = span.get(way, (0, 0))
        seconds = when(last) - when(first) if way in span else 0.0
        out[way] = {"sent": lines, "whole": len(seen), "cut": cut[way], "missing": lines - len(set(seen)),
                    "out of order": int(seen != sorted(seen)),
                    "lines/s": round(len(seen) / seconds) if seconds else 0}
    return out, cuts


def one_boot(image, ways: list[str], lines: int, stall: float, every: float) -> tuple[dict, float, list[str], list[str]]:
    with tempfile.TemporaryDirectory(prefix="kvmpod-bench-flood-") as tmp:
        sock = os.path.join(tmp, "apps")
        reader = StallingReader(sock, stall, every)
        reader.start()
        started = time.monotonic()
        proc = subprocess.run(qemu_argv(image, sock, guest_script(ways, lines)), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=1800)
        seconds = time.monotonic() - started
        reader.stop.set()
        reader.join(timeout=5)
        if END not in proc.stdout:
            raise SystemExit(f"the guest did not finish (QEMU exited {proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-2000:]}")
        termios = [w for w in proc.stdout.split() if w.endswith("crtscts")][:1]
        figures, cuts = count(bytes(reader.data), reader.arrived, ways, lines)
        return figures, seconds, termios, cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=3000, help="lines per phase (default 3000)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"phases, in order (default {','.join(WAYS)})")
    parser.add_argument("--stall-ms", type=float, default=200, help="the reader's stall (default 200 ms; 0: none)")
    parser.add_argument("--every-ms", type=float, default=500, help="one stall every … of reading (default 500 ms)")
    parser.add_argument("--runs", type=int, default=1, help="boots (default 1)")
    args = parser.parse_args()
    ways = args.ways.split(",")
    if not ways or any(w not in WAYS for w in ways):
        parser.error(f"--ways: give some of {', '.join(WAYS)}, comma-separated")
    from kvmpod.host.hypervisor.argv import detect_accel
    from kvmpod.host.images import stage1

    image = stage1.ensure_stage1()
    totals = {w: {} for w in ways}
    for run in range(args.runs):
        figures, seconds, termios, cuts = one_boot(image, ways, args.lines, args.stall_ms / 1000,
                                                   args.every_ms / 1000)
        print(f"boot {run + 1}: {seconds:.1f} s; ttyS1 at the end: {' '.join(termios) or '?'}")
        for line in cuts[:5]:
            print(f"  cut: {line!r}")
        for way, f in figures.items():
            print(f"  {way:8} " + ", ".join(f"{k} {v:g}" for k, v in f.items()))
            for k, v in f.items():
                totals[way].setdefault(k, []).append(v)
    print(f"serial flood: {args.runs} boot(s), accelerator {detect_accel()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end; host reader stalls {args.stall_ms:g} ms "
          f"every {args.every_ms:g} ms")
    for way, f in totals.items():
        print(f"  {way:8} " + ", ".join(f"{k} {sum(v) if k != 'lines/s' else round(statistics.median(v)):g}"
                                         for k, v in f.items()) + " (lines/s: the median)")


if __name__ == "__main__":
    main()
