"""Issue 22 in real boots: several pods at once through `kvmpod run`, a soak, and faults while pods run.

One group ("load") of five real TCG guests started side by side by this one test process: the suite
holds ONE boot slot (/work/bin/boot-slot) for the whole group, although five VMs run in it at once;
each pod is tiny (one busybox app, one vCPU: `--cpus 1`) so that five guests fit on a 2-core machine. Each pod has a role
of its own, so that each check below can fail on its own:

- alpha (exits 0) and bravo (exits 7) when the test says so: each run's own exit status, its apps'
  lines only on its own terminal and in its own apps.log; alpha's pod, whose apps all succeeded,
  powers off at once, and what alpha wrote as its last act is whole on the host; bravo's shuts down
  in order; every pod its own directory, lock, QMP
  socket and staged volumes (seen in its supervisor's mount namespace); `kvmpod list` shows all of
  them running, and `kvmpod gc` run while they run removes none;
- soak: its app appends numbered records to a host volume, syncs (fsync) every 20 and says which
  it synced on its output, for SOAK_SECONDS; `kvmpod stop` ends it: every record reported as synced
  is on the host (a SHA-256 of the expected bytes), the file holds nothing but whole records in order,
  and the pod's status is recorded;
- victim: its QEMU is SIGKILLed while its app runs: `kvmpod run` exits 1 with one clear line,
  nothing of the pod is left running or mounted, `kvmpod gc` removes it;
- tight: its state directory (`kvmpod --dir`) is a 128 MiB tmpfs the test mounts, which the test
  fills while the pod runs: the pod still ends with its app's status (5) and records it, kvmpod says
  once what it could not log, and once there is space again the next pod there gets going (it is
  prepared and its VM starts; the test then kills it: no second full boot).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from kvmpod.host.hypervisor.volume_staging import STAGING_DIR

from .conftest import BootState, module_boot
from .kvmpod_guest import busybox_rootfs, host_kvmpod, kept_dir, kvmpod_cli, pod_uuid, processes_naming, write_json
from .test_run import LINE, RUN_TIMEOUT, _mounted_anywhere, sh_app

pytestmark = pytest.mark.e2e

SOAK_SECONDS = float(os.environ.get("KVMPOD_E2E_SOAK_SECONDS", "40"))  # of writing, to `kvmpod stop`; longer by hand
PAD = "x" * 100
RECORD = "seq={n:08d} " + PAD + "\n"
TIGHT_FS_BYTES = 128 << 20
ALPHA_LINES = 200_000  # 1.3 MB
ALPHA_FLOOD = 2_000

WAIT_FOR_GO = "while [ ! -e /ctl/go ]; do sleep 1; done"
APPS = {
    # its last act: a file of ALPHA_LINES numbers into its writable volume, no sync: the pod's end
    # (every app exited 0: pod-done.target, an immediate poweroff after sync(), guest/lifecycle.py) must
    # still bring it whole to the host; before it ALPHA_FLOOD lines, which journald still passes on
    # to the host after the app is gone (the record unit waits for that, guest/lifecycle.py DRAIN)
    "alpha": f"echo alpha up; {WAIT_FOR_GO}; busybox seq {ALPHA_FLOOD} | while read n; do echo alpha $n; done; "
             f"echo alpha bye; "
             f"busybox seq {ALPHA_LINES} > /out/alpha.seq; exit 0",
    "bravo": f"echo bravo up; {WAIT_FOR_GO}; echo bravo bye; exit 7",
    "victim": "echo victim up; while :; do sleep 1; done",
    "tight": f"echo tight up; {WAIT_FOR_GO}; i=0; while [ $i -lt 200 ]; do echo tight line $i after the disk filled; "
             "i=$((i+1)); done; exit 5",
    # appends numbered records, fsyncs every 20 (busybox sync FILE) and says which are synced
    "soak": "f=/data/soak.log; n=0; trap 'echo soak stopped after seq=$n; exit 0' TERM; exec 3>>$f; echo soak up; "
            "while :; do i=0; while [ $i -lt 20 ]; do n=$((n+1)); printf 'seq=%08d %s\\n' $n " + PAD + " >&3; "
            "i=$((i+1)); done; sync $f && echo soak synced seq=$n; done",
}


@dataclass
class Pod:
    name: str
    env: dict[str, str]
    uuid: str = ""
    proc: subprocess.Popen | None = None
    lines: list[str] = field(default_factory=list)
    stderr: str = ""
    rc: int | None = None
    up: threading.Event = field(default_factory=threading.Event)
    volume: Path | None = None
    reader: threading.Thread | None = None

    @property
    def pods(self) -> Path:
        return Path(self.env["KVMPOD_PODS_DIR"])

    @property
    def dir(self) -> Path:
        return self.pods / self.uuid

    def state(self) -> dict:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def qemu_pid(self) -> int | None:
        """QEMU: the child of the pod's supervisor (state.json's hypervisor_pid)."""
        sup = self.state().get("hypervisor_pid")
        try:
            children = Path(f"/proc/{sup}/task/{sup}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def wait(self, timeout: float) -> None:
        """The run's end; its stdout is the reader thread's alone (a communicate() beside it took the
        last lines away from it, which looked like a lost line), stderr read here (a few lines)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.rc = self.proc.returncode
        if self.reader is not None:
            self.reader.join(10)

    def app_lines(self) -> list[tuple[str, str]]:
        return [(m["app"], m["text"]) for m in map(LINE.match, (ln.rstrip("\n") for ln in self.lines)) if m]

    def where(self) -> str:
        return f"(pod {self.name} {self.uuid}: kvmpod run exited {self.rc}; stderr:\n{self.stderr}\nstdout tail:\n" \
               f"{''.join(self.lines[-20:])})"


@dataclass
class LoadState(BootState):
    LABEL: ClassVar[str] = "load"
    pods: dict[str, Pod] = field(default_factory=dict)
    results: dict[str, object] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # pod name -> what went wrong in the group run

    def output_dir(self) -> Path | None:
        return self.logs

    def pod(self, name: str) -> Pod:
        self.require()
        assert name not in self.failures, f"{self.failures[name]} {self.pods[name].where()} (logs in {self.logs})"
        return self.pods[name]


def _start(state: LoadState, pod: Pod, manifest: dict, app_dir: Path, *extra: str) -> None:
    pod.uuid = pod_uuid()
    pod_file = write_json(state.logs / f"{pod.name}.json", manifest)
    pod.proc = kvmpod_cli("run", "--manifest", str(pod_file), "--uuid", pod.uuid, "--app", f"{pod.name}={app_dir}",
                          *extra, env=pod.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        for line in pod.proc.stdout:
            pod.lines.append(line)
            if re.search(rf"\] {pod.name}\[\d+\]: ({pod.name} up|soak synced seq=\d+)$", line.rstrip("\n")):
                pod.up.set()

    pod.reader = threading.Thread(target=read, daemon=True)
    pod.reader.start()


def _manifest(name: str, volume: str, guest_path: str, source: Path, out: Path | None = None) -> dict:
    # ctl is read-only for the app: kvmpod stages it (a read-only bind in the supervisor's namespace);
    # out (alpha's) is writable
    mounts, volumes = [(volume, guest_path)], [{"name": volume, "kind": "host", "source": str(source),
                                                "readOnly": volume == "ctl"}]
    if out is not None:
        mounts.append(("out", "/out"))
        volumes.append({"name": "out", "kind": "host", "source": str(out), "readOnly": False})
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [sh_app(name, APPS[name], mounts)],
            "volumes": volumes}


def _run_group(state: LoadState, tmp: Path):
    env = {"KVMPOD_PODS_DIR": str(state.logs / "pods"), "KVMPOD_IMAGES_DIR": str(state.logs / "image-store")}
    state.install = "the stage1 of kvmpod run (this checkout's .deb)"
    built = host_kvmpod("stage1", "build", check=False, env=env)  # once, before five runs ask for it
    if built.returncode != 0:
        raise RuntimeError(f"kvmpod stage1 build: {built.stderr}")
    tight_fs = state.logs / "tight-fs"
    tight_fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TIGHT_FS_BYTES},mode=0700", "kvmpod-e2e-tight", str(tight_fs)],
                   check=True)
    try:
        yield from _group_body(state, env, tight_fs)
    finally:
        for pod in state.pods.values():
            if pod.proc is not None and pod.proc.poll() is None:
                pod.proc.kill()
                pod.proc.wait()
        subprocess.run(["umount", "-l", str(tight_fs)], check=False)


def _group_body(state: LoadState, env: dict[str, str], tight_fs: Path):
    started = time.monotonic()
    for name in ("alpha", "bravo", "victim", "tight", "soak"):
        pod = state.pods[name] = Pod(name, dict(env))
        if name == "tight":
            pod.env = {**env, "KVMPOD_PODS_DIR": str(tight_fs / "pods")}
        pod.volume = state.logs / f"vol-{name}"
        pod.volume.mkdir()
        volume, path = ("data", "/data") if name == "soak" else ("ctl", "/ctl")
        out = None
        if name == "alpha":
            out = state.logs / "vol-alpha-out"
            out.mkdir()
        _start(state, pod, _manifest(name, volume, path, pod.volume, out),
               busybox_rootfs(state.logs / "images" / name), "--net", "none", "--cpus", "1")
    deadline = time.monotonic() + RUN_TIMEOUT
    for pod in state.pods.values():
        if not pod.up.wait(max(1.0, deadline - time.monotonic())):
            state.failures[pod.name] = f"never printed its first line within {RUN_TIMEOUT:.0f} s"
    soak_from = time.monotonic()
    state.results["all_up_seconds"] = soak_from - started
    r = state.results
    # Everything at once: list shows all, gc removes none, each pod's own files and staging.
    r["list"] = host_kvmpod("list", env=env, check=False)
    r["gc"] = host_kvmpod("gc", "--older-than", "0s", env=env, check=False)
    r["dirs_after_gc"] = sorted(os.listdir(env["KVMPOD_PODS_DIR"]))
    r["staging"] = {}
    for pod in state.pods.values():
        qemu = pod.qemu_pid()
        try:  # (mount point, root in its file system, type) of the staged binds and the pod share
            r["staging"][pod.name] = [(f[4], f[3], line.split(" - ")[1].split(" ")[0]) for line in
                                      Path(f"/proc/{qemu}/mountinfo").read_text().splitlines()
                                      if (f := line.split(" "))[4].startswith(STAGING_DIR + "/")
                                      or f[4] == str(pod.dir / "share")]
        except (OSError, TypeError):
            r["staging"][pod.name] = None
        r.setdefault("argv", {})[pod.name] = _read_json(pod.dir / "argv.json")

    # victim: its QEMU SIGKILLed while its app runs.
    victim = state.pods["victim"]
    r["victim_qemu"] = victim.qemu_pid()
    if r["victim_qemu"]:
        os.kill(r["victim_qemu"], signal.SIGKILL)
    victim.wait(120)
    r["victim_left"] = _leftovers(victim)
    r["victim_status"] = host_kvmpod("status", victim.uuid, "--json", env=env, check=False)

    # tight: its state directory's file system filled while it runs; then its app ends with 5.
    tight = state.pods["tight"]
    filler = tight_fs / "filler"
    r["fill"] = subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, text=True)
    r["tight_df_full"] = shutil.disk_usage(tight_fs).free
    time.sleep(5)  # the guest and kvmpod go on writing (console, journal) into a full disk
    (tight.volume / "go").touch()
    tight.wait(RUN_TIMEOUT)
    r["tight_status"] = host_kvmpod("status", tight.uuid, "--json", env=tight.env, check=False)
    filler.unlink()
    # The next pod there, once there is space: prepared and its VM started (then killed, no second boot).
    nxt = Pod("tight", dict(tight.env))
    _start(state, nxt, _manifest("tight", "ctl", "/ctl", tight.volume), busybox_rootfs(state.logs / "images/next"),
           "--net", "none")
    t_end = time.monotonic() + 300
    while time.monotonic() < t_end and nxt.proc.poll() is None and not nxt.state().get("hypervisor_pid"):
        time.sleep(0.5)
    r["next_state"] = nxt.state()
    time.sleep(2)
    nxt.proc.send_signal(signal.SIGINT)
    time.sleep(1)
    nxt.proc.send_signal(signal.SIGINT)
    nxt.wait(120)
    r["next"] = (nxt.rc, nxt.stderr)
    r["tight_gc"] = host_kvmpod("gc", "--older-than", "0s", env=tight.env, check=False)

    # soak: written to for SOAK_SECONDS, then kvmpod stop.
    soak = state.pods["soak"]
    time.sleep(max(0.0, SOAK_SECONDS - (time.monotonic() - soak_from)))
    r["soak_stop"] = host_kvmpod("stop", soak.uuid, "--timeout", str(RUN_TIMEOUT), env=env, check=False)
    soak.wait(RUN_TIMEOUT)
    r["soak_status"] = host_kvmpod("status", soak.uuid, "--json", env=env, check=False)

    for name in ("alpha", "bravo"):
        (state.pods[name].volume / "go").touch()
    for name in ("alpha", "bravo"):
        state.pods[name].wait(RUN_TIMEOUT)
    r["list_after"] = host_kvmpod("list", env=env, check=False)
    for pod in state.pods.values():  # what the tests read of each pod directory, before gc removes it
        r.setdefault("state_json", {})[pod.name] = pod.state()
        r.setdefault("apps_log", {})[pod.name] = (pod.dir / "apps.log").read_text(errors="replace") \
            if (pod.dir / "apps.log").is_file() else ""
        r.setdefault("console", {})[pod.name] = (pod.dir / "console.log").read_text(errors="replace") \
            if (pod.dir / "console.log").is_file() else ""
    r["gc_after"] = host_kvmpod("gc", "--older-than", "0s", env=env, check=False)
    r["left_after"] = {name: _leftovers(pod) for name, pod in state.pods.items()}
    for pod in state.pods.values():
        (state.logs / f"{pod.name}.stdout").write_text("".join(pod.lines))
        (state.logs / f"{pod.name}.stderr").write_text(pod.stderr)
    state.seconds = time.monotonic() - started
    argv = r["argv"].get("alpha") or []
    state.accelerator = "tcg" if "tcg" in argv else "kvm"
    yield


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _leftovers(pod: Pod) -> dict[str, list[str]]:
    """Processes whose command line names the pod, and mounts of its directory in any namespace."""
    procs = processes_naming(pod.uuid, 120)
    return {"processes": procs, "mounts": _mounted_anywhere(str(pod.dir))}


@pytest.fixture(scope="module")
def load(request: pytest.FixtureRequest):
    yield from module_boot(request, LoadState(logs=kept_dir("load")), _run_group)


# ---------------------------------------------------------------- four (five) pods at once

def test_every_pod_ends_with_its_own_apps_status(load: LoadState) -> None:
    alpha, bravo = load.pod("alpha"), load.pod("bravo")
    assert alpha.rc == 0, alpha.where()
    assert bravo.rc == 7, bravo.where()
    assert load.results["state_json"]["bravo"]["how"].startswith("app bravo failed first: exited 7"), \
        load.results["state_json"]["bravo"]


def test_each_pods_output_reaches_only_its_own_terminal_and_log(load: LoadState) -> None:
    for name in ("alpha", "bravo", "soak"):
        pod = load.pod(name)
        apps = {app for app, _ in pod.app_lines()}
        assert apps == {name}, (name, apps, pod.where())
        assert not [ln for ln in pod.lines if not LINE.match(ln.rstrip("\n"))], pod.where()
        log = load.results["apps_log"][name]
        others = [n for n in load.pods if n != name and re.search(rf"\] {n}\[\d+\]: ", log)]
        assert f"{name} up" in log and others == [], (name, others)


def test_the_last_line_of_an_app_that_ends_its_pod_reaches_the_terminal(load: LoadState) -> None:
    """alpha's last line comes right before its pod powers off by itself (every app exited 0); bravo's
    before a failure powers it off. Both must reach their terminals."""
    alpha, bravo = load.pod("alpha"), load.pod("bravo")
    assert ("bravo", "bravo bye") in bravo.app_lines(), bravo.where()
    assert ("alpha", "alpha bye") in alpha.app_lines(), alpha.where()


def test_a_pod_whose_apps_all_succeeded_powers_off_at_once_and_its_last_writes_reach_the_host(load: LoadState) -> None:
    """issue 20: alpha's app exited 0, its pod's last: PID 1 synced and powered off at once (no orderly
    shutdown: no systemd-shutdown on its console), every one of the lines it printed before reached
    kvmpod run's output, and the 1.3 MB it wrote as its very last act, unsynced, is whole in the host
    volume. bravo failed and soak was stopped (kvmpod stop): both shut down in
    order (systemd-shutdown ran), which is what records an app the shutdown stopped (soak's record
    is checked by the soak test)."""
    alpha = load.pod("alpha")
    console = load.results["console"]
    assert "reboot: Power down" in console["alpha"] and "systemd-shutdown" not in console["alpha"], \
        console["alpha"][-3000:]
    for name in ("bravo", "soak"):
        load.pod(name)
        assert "systemd-shutdown" in console[name] and "reboot: Power down" in console[name], (name, console[name][-3000:])
    said = [text for app, text in alpha.app_lines() if app == "alpha" and text != "alpha up"]
    assert said == [f"alpha {n}" for n in range(1, ALPHA_FLOOD + 1)] + ["alpha bye"], (len(said), said[-3:])
    written = (load.logs / "vol-alpha-out/alpha.seq").read_bytes()
    expected = "".join(f"{n}\n" for n in range(1, ALPHA_LINES + 1)).encode()
    assert len(written) == len(expected) and written == expected, (len(written), len(expected), alpha.where())


def test_each_pod_has_its_own_directory_lock_qmp_socket_and_staging(load: LoadState) -> None:
    load.require()
    argvs = load.results["argv"]
    running = [n for n in ("alpha", "bravo", "soak", "victim") if n not in load.failures]
    assert len(running) == 4, load.failures
    uuids = {n: load.pods[n].uuid for n in load.pods}
    for name in running:
        text = "\n".join(argvs[name])
        assert f"/run/kvmpod/{uuids[name]}.qmp" in text and str(load.pods[name].dir) in text, name
        assert not [o for o in uuids if o != name and uuids[o] in text], (name, "names another pod")
        # In its supervisor's mount namespace: its own capped share, and (alpha, bravo, victim: a
        # read-only volume) its own staged bind, of its own volume only.
        staged = load.results["staging"][name]
        assert staged and (str(load.pods[name].dir / "share"), "/", "tmpfs") in staged, (name, staged)
        binds = [root for point, root, _ in staged if point.startswith(STAGING_DIR + "/vol")]
        if name != "soak":
            assert binds == [str(load.pods[name].volume)], (name, staged)
        else:
            assert binds == [], (name, staged)
    pids = {load.results["state_json"][n].get("kvmpod_pid") for n in running}
    assert len(pids) == len(running), pids  # each pod's lock held by its own kvmpod run


def test_list_shows_every_running_pod_and_gc_removes_none_of_them(load: LoadState) -> None:
    load.require()
    listed = load.results["list"].stdout
    for name in ("alpha", "bravo", "soak", "victim"):
        assert re.search(rf"^{load.pods[name].uuid}\s+running\s", listed, re.M), (name, listed)
    gc = load.results["gc"]
    assert gc.returncode == 0 and "removed" not in gc.stdout, gc
    assert sorted(gc.stdout.splitlines()) == sorted(f"kept {load.pods[n].uuid} (running)"
                                                   for n in ("alpha", "bravo", "victim", "soak")), gc.stdout
    assert load.results["dirs_after_gc"] == sorted(load.pods[n].uuid for n in ("alpha", "bravo", "victim", "soak"))
    # Afterwards: every pod listed with its own status, gc removes them all, nothing left anywhere.
    after = load.results["list_after"].stdout
    for name, status in (("alpha", 0), ("bravo", 7), ("soak", 0), ("victim", 1)):
        assert re.search(rf"^{load.pods[name].uuid}\s+exited\s+{status}\s", after, re.M), (name, after)
    removed = load.results["gc_after"].stdout.split()
    assert sorted(removed[1::2]) == sorted(load.pods[n].uuid for n in ("alpha", "bravo", "victim", "soak")), removed
    for name, left in load.results["left_after"].items():
        assert left == {"processes": [], "mounts": []}, (name, left)


# ---------------------------------------------------------------- soak

def test_soak_every_record_reported_synced_is_on_the_host(load: LoadState) -> None:
    soak = load.pod("soak")
    assert load.results["soak_stop"].returncode == 0, load.results["soak_stop"]
    assert soak.rc == 0, soak.where()
    synced = [int(m.group(1)) for _, text in soak.app_lines() if (m := re.fullmatch(r"soak synced seq=(\d+)", text))]
    assert synced and synced == sorted(synced), synced[-5:]
    last = synced[-1]
    data = (soak.volume / "soak.log").read_bytes()
    expected = "".join(RECORD.format(n=n) for n in range(1, last + 1)).encode()
    assert hashlib.sha256(data[:len(expected)]).hexdigest() == hashlib.sha256(expected).hexdigest(), \
        f"the first {last} records (reported synced) differ on the host ({len(data)} bytes there)"
    # Whatever came after the last sync is whole records in order too (nothing torn or reordered).
    tail = data[len(expected):]
    whole = len(tail) // len(RECORD.format(n=1))
    assert tail == "".join(RECORD.format(n=n) for n in range(last + 1, last + 1 + whole)).encode()
    stopped = [t for _, t in soak.app_lines() if t.startswith("soak stopped after seq=")]
    assert stopped and int(stopped[0].split("=")[1]) >= last, stopped
    status = json.loads(load.results["soak_status"].stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 0), status
    assert [a["ended"] for a in status["apps"]] == ["exited 0"], status
    load.results["soak_records"] = last
    print(f"\nsoak: {last} records ({len(expected)} bytes) reported synced, all on the host; "
          f"{len(data)} bytes in the file")


# ---------------------------------------------------------------- faults while pods run

def test_qemu_sigkilled_mid_run_gives_status_1_one_line_and_leaves_nothing(load: LoadState) -> None:
    victim = load.pod("victim")
    assert load.results["victim_qemu"], "no QEMU found under the victim's supervisor"
    assert victim.rc == 1, victim.where()
    lines = [ln for ln in victim.stderr.splitlines() if "before the guest recorded victim" in ln]
    assert len(lines) == 1 and "the VM ended (hypervisor exit 137)" in lines[0], victim.stderr
    assert "Traceback" not in victim.stderr
    assert load.results["victim_left"] == {"processes": [], "mounts": []}, load.results["victim_left"]
    status = json.loads(load.results["victim_status"].stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 1), status


def test_a_state_dir_filled_while_the_pod_runs_still_ends_and_records_it(load: LoadState) -> None:
    tight = load.pod("tight")
    assert load.results["tight_df_full"] < 1 << 20, load.results["fill"]
    assert tight.rc == 5, tight.where()
    status = json.loads(load.results["tight_status"].stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 5), status
    assert status["how"].startswith("app tight failed first: exited 5"), status
    dropped = [ln for ln in tight.stderr.splitlines() if re.match(r"kvmpod: \d+ bytes not written to ", ln)]
    assert dropped and all(ln.endswith(": No space left on device") for ln in dropped), tight.stderr
    assert "Traceback" not in tight.stderr


def test_the_next_pod_runs_once_there_is_space_again(load: LoadState) -> None:
    load.pod("tight")
    state = load.results["next_state"]
    assert state.get("hypervisor_pid") and state.get("state") == "running", state
    rc, err = load.results["next"]
    assert "no space" not in err and "Traceback" not in err, err
    assert rc is not None and rc != 0, err  # killed by the test (a second Ctrl-C)
    removed = load.results["tight_gc"].stdout.split()
    assert len(removed) == 4 and removed[0] == removed[2] == "removed", removed  # tight and the next one
