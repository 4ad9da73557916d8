"""Issue 22, load without guests: four pods at once through `kvmpod run`, each with a stand-in for QEMU
that does what the guest and QEMU do at the host's edges (reads its own argv: serves its chardev sockets,
sends each app's lines on the apps' serial socket, writes each app's end into the pod share, which is the supervisor's capped tmpfs,
then exits). Everything of kvmpod is real. Each pod exits with its own apps' status, its output goes
only to its own terminal and apps.log, each has its own directory, lock, QMP socket and share;
`kvmpod list` shows them all while they run and `kvmpod gc` then removes none of them."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmpod.host.hypervisor.boot_files import BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET

REPO = Path(__file__).resolve().parents[2]
PODS = 4

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kvmpod run's namespaces and overlay need root")

STAND_IN = r'''#!/usr/bin/env python3
import json, os, socket, sys, threading, time
argv = sys.argv[1:]
value = lambda flag, start: next(a for i, a in enumerate(argv) if i and argv[i - 1] == flag and a.startswith(start))
# QEMU serves its chardevs on UNIX sockets kvmpod run connects to: serve them the same way.
servers, conns = {}, {}
for i, a in enumerate(argv):
    if i and argv[i - 1] == "-chardev" and a.startswith("socket,") and "server=on" in a:
        opts = dict(kv.split("=", 1) for kv in a.split(",")[1:] if "=" in kv)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(opts["path"])
        s.listen(1)
        servers[opts["id"]] = s
        threading.Thread(target=lambda n=opts["id"], s=s: conns.__setitem__(n, s.accept()[0]), daemon=True).start()
share = value("-fsdev", "local,id=pod,").split("path=", 1)[1].split(",")[0]
pod = os.path.dirname(share)
open(os.path.join(os.path.dirname(share), "..", "..", "started-" + os.path.basename(pod)), "w").close()
manifest = json.load(open(os.path.join(pod, "pod.json")))
time.sleep(float(os.environ.get("STAND_IN_SECONDS", "4")))  # the pods overlap
deadline = time.monotonic() + 30
while "apps" not in conns and time.monotonic() < deadline:
    time.sleep(0.05)
for app in manifest["apps"]:
    conns["apps"].sendall(f"[    1.000000] {app['name']}[100]: hello from {app['name']} in {os.path.basename(pod)}\n"
                          .encode())
for k, app in enumerate(manifest["apps"]):
    status = int(app["name"].rsplit("-", 1)[1])
    result = "success" if status == 0 else "exit-code"
    record = (f"Result={result}\nExecMainStartTimestampMonotonic={1000 + k}\n"
              f"ExecMainExitTimestampMonotonic={2000 + k}\nExecMainCode=1\nExecMainStatus={status}\n")
    with open(os.path.join(share, "apps", app["name"]), "w") as f:
        f.write(record)
for c in conns.values():
    c.close()
for s in servers.values():
    os.unlink(s.getsockname())
'''


def test_four_pods_at_once_each_with_its_own_status_output_and_files(tmp_path: Path):
    stage1 = tmp_path / "stage1"
    (stage1 / "root/etc").mkdir(parents=True)
    kernel = bytearray(4096)
    kernel[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] = BZIMAGE_MAGIC
    (stage1 / "vmlinuz").write_bytes(bytes(kernel))
    (tmp_path / "app/bin").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").write_text(STAND_IN)
    (bin_dir / "qemu-system-x86_64").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), PATH=f"{bin_dir}:{os.environ['PATH']}",
               KVMPOD_DIR=str(tmp_path / "state"))
    env.pop("KVMPOD_PODS_DIR", None)
    expected = {}
    procs = []
    for n in range(PODS):
        names = [f"p{n}a-0", f"p{n}b-{n + 2}"] if n else [f"p{n}a-0", f"p{n}b-0"]  # pod 0 succeeds
        manifest = tmp_path / f"pod{n}.json"
        manifest.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "volumes": [], "apps": [
            {"name": a, "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}} for a in names]}))
        argv = [sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(manifest), "--stage1", str(stage1),
                "--net", "none", "--no-systemd"]
        for a in names:
            argv += ["--app", f"{a}={tmp_path / 'app'}"]
        expected[n] = (names, 0 if n == 0 else n + 2)
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    deadline = time.monotonic() + 120
    while len(list((tmp_path / "state").glob("started-*"))) < PODS:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.1)
    listing = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "list"], env=env, capture_output=True,
                             text=True, timeout=60).stdout
    gc = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "gc"], env=env, capture_output=True, text=True,
                        timeout=60).stdout
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]

    uuids = sorted(os.listdir(tmp_path / "state/pods"))
    assert len(uuids) == PODS
    assert sum(" running " in line for line in listing.splitlines()) == PODS, listing
    assert "removed" not in gc and gc.count("(running)") == PODS, gc
    seen_qmp, seen_share = set(), set()
    for n, (out, err, rc) in enumerate(results):
        names, status = expected[n]
        assert rc == status, err
        lines = [line for line in out.splitlines() if line]
        assert sorted(line.split("] ", 1)[1].split("[")[0] for line in lines) == sorted(names), out
        uuid = {line.rsplit(" in ", 1)[1] for line in lines}
        assert len(uuid) == 1  # only its own pod's output
        pod = tmp_path / "state/pods" / uuid.pop()
        assert (pod / "apps.log").read_text().count("hello from") == 2
        argv = json.loads((pod / "argv.json").read_text())
        seen_qmp |= {a for a in argv if a.startswith("unix:")}
        seen_share |= {argv[i + 1] for i, a in enumerate(argv) if a == "--pod-share"}
        state = json.loads((pod / "state.json").read_text())
        assert (state["state"], state["exit_status"]) == ("exited", status)
    assert len(seen_qmp) == PODS and len(seen_share) == PODS
