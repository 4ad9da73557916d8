"""`kvmpod run` end to end: real pods under QEMU, driven as a user drives them.

Three boots, each shared by the tests of one scenario, plus one that is killed before it boots:
- "run-fail": an app fails while another still runs: the pod shuts down, the failing app's status is
  `kvmpod run`'s exit status, the running apps got SIGTERM (one of them then fails in its own
  post-stop handler, which ran: a later failure than the first), every app's output reached the
  terminal prefixed with its name, and the host reads every app's end afterwards (`kvmpod status`,
  `list`);
- "run-ok": every app exits 0 (one of them from an .aci whose image manifest gives its command): the
  pod powers off by itself, `kvmpod run` exits 0, and every end was recorded by the app's record
  unit (issue 20), not by its reaper's `systemctl show`; run with --keep, its guest journal is
  persistent and on the host afterwards;
- "run-sigint": an app that never exits keeps the pod up until the test sends SIGINT to `kvmpod run`
  (a Ctrl-C): the apps get SIGTERM, the VM powers off, and the ends are still reported (exit 130); the
  running pod's guest journal is volatile (nothing of it in the pod's upper dir);
- SIGKILL of `kvmpod run` while the VM starts: the VM dies with it (nothing runs unwatched), the pod's
  root overlay (mounted in the VM's namespace only, never the host's) is gone with it, in no process's
  mount namespace is anything of the pod left, the pod shows as aborted, and `kvmpod gc` removes it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from kvmpod.host.images.oci_writer import write_docker_archive, write_oci_layout

from .conftest import BootState, module_boot
from .kvmpod_guest import busybox_rootfs, host_kvmpod, kept_dir, kvmpod_cli, pod_uuid, write_json

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 900.0  # a TCG boot on a loaded 2-core machine was seen at 5 minutes, shutdown included
LINE = re.compile(r"^\[\s*\d+\.\d+\] (?P<app>[a-z0-9-]+)\[\d+\]: (?P<text>.*)$")


def sh_app(name: str, script: str, mounts: list[tuple[str, str]] = ()) -> dict:
    return {"name": name, "app": {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0"},
            "mounts": [{"volume": v, "path": p} for v, p in mounts]}


def _with_post_stop(app: dict, script: str) -> dict:
    app["app"]["eventHandlers"] = [{"name": "post-stop", "exec": ["/bin/sh", "-c", script]}]
    return app


def _records(state: RunState) -> dict[str, dict[str, str]]:
    """Each app's record in the pod share, as the guest wrote it."""
    apps = state.pods / state.uuid / "share/apps"
    return {p.name: dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)
            for p in apps.iterdir() if not p.name.startswith(".")}


def _by_record_unit(record: dict[str, str]) -> bool:
    """Written by the app's kvmpod-ended-/kvmpod-failed-<app>.service (kvmpod.guest.lifecycle.RECORD_SCRIPT), which has
    no start time; the reaper's fallback (`systemctl show`) has one."""
    return "ExecMainStartTimestampMonotonic" not in record


@dataclass
class RunState(BootState):
    LABEL: ClassVar[str] = "run"
    uuid: str = ""
    pods: Path | None = None
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    vols: dict[str, Path] = field(default_factory=dict)
    fetched: subprocess.CompletedProcess | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    quick_digest: str = ""
    image_gc_running: subprocess.CompletedProcess | None = None
    image_rm_running: subprocess.CompletedProcess | None = None
    upper_while_running: list[str] = field(default_factory=list)

    def output_dir(self) -> Path | None:
        return self.logs

    @property
    def env(self) -> dict[str, str]:
        return {"KVMPOD_PODS_DIR": str(self.pods), "KVMPOD_IMAGES_DIR": str(self.logs / "image-store"),
                **self.extra_env}

    def app_lines(self) -> list[tuple[str, str]]:
        return [(m["app"], m["text"]) for m in map(LINE.match, self.stdout.splitlines()) if m]

    def status(self) -> dict:
        proc = host_kvmpod("status", self.uuid, "--json", env=self.env)
        return json.loads(proc.stdout)

    def where(self) -> str:
        return (f"(kvmpod run exited {self.rc}; stderr:\n{self.stderr}\nlogs and the pod directory kept in "
                f"{self.logs})")


def _start(state: RunState, manifest: dict, apps: dict[str, Path], *extra: str) -> subprocess.Popen:
    state.pods = state.logs / "pods"
    state.uuid = pod_uuid()
    state.install = "the stage1 of kvmpod run (this checkout's .deb)"
    pod_file = write_json(state.logs / "pod.json", manifest)
    args = ["run", "--manifest", str(pod_file), "--uuid", state.uuid, *extra]
    for name, image in apps.items():
        args += ["--app", f"{name}={image}"]
    return kvmpod_cli(*args, env=state.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(state: RunState, proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> None:
    try:
        state.stdout, state.stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)  # the second one kills the VM
        state.stdout, state.stderr = proc.communicate()
        raise
    finally:
        state.rc = proc.returncode
        (state.logs / "run.stdout").write_text(state.stdout or "")
        (state.logs / "run.stderr").write_text(state.stderr or "")
    state.accelerator = "tcg" if "-accel\ntcg" in _argv_text(state) else "kvm"


def _argv_text(state: RunState) -> str:
    path = state.pods / state.uuid / "argv.json" if state.pods else None
    return "\n".join(json.loads(path.read_text())) if path and path.is_file() else ""


# ---------------------------------------------------------------- run-fail

def _run_fail(state: RunState, tmp: Path) -> Iterator[None]:
    out = state.logs / "out"
    out.mkdir(parents=True)
    state.vols["out"] = out
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        sh_app("hello", "echo hello from hello; echo to stderr >&2; echo hi > /out/hello.txt", [("out", "/out")]),
        sh_app("fail", "i=0; while [ ! -e /out/hello.txt ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done; "
                       "echo failing now; exit 3", [("out", "/out")]),
        sh_app("sleeper", "echo sleeping; exec sleep 100000"),
        # Stopped with SIGTERM like sleeper, but its own post-stop handler fails: a failure of its own.
        _with_post_stop(sh_app("handler", "echo handling; exec sleep 100000", [("out", "/out")]),
                        "echo post-stop ran > /out/handler.post; exit 1"),
    ], "volumes": [{"name": "out", "kind": "host", "source": str(out)}]}
    apps = {name: busybox_rootfs(state.logs / "images" / name) for name in ("hello", "fail", "sleeper", "handler")}
    started = time.monotonic()
    _finish(state, _start(state, manifest, apps))
    state.seconds = time.monotonic() - started
    yield


@pytest.fixture(scope="module")
def run_fail(request: pytest.FixtureRequest):
    yield from module_boot(request, type("RunFail", (RunState,), {"LABEL": "run-fail"})(logs=kept_dir("run-fail")),
                           _run_fail)


def test_failing_app_status_is_the_exit_status_of_kvmpod_run(run_fail: RunState) -> None:
    run_fail.require()
    assert run_fail.rc == 3, run_fail.where()
    assert "app fail failed first: exited 3" in (run_fail.pods / run_fail.uuid / "state.json").read_text()


def test_app_output_reaches_the_terminal_prefixed_with_the_app(run_fail: RunState) -> None:
    run_fail.require()
    lines = run_fail.app_lines()
    for expected in [("hello", "hello from hello"), ("hello", "to stderr"), ("fail", "failing now"),
                     ("sleeper", "sleeping")]:
        assert expected in lines, (expected, run_fail.stdout, run_fail.where())
    assert not [ln for ln in run_fail.stdout.splitlines() if not LINE.match(ln)], run_fail.stdout


def test_host_reads_every_app_end_after_the_vm_is_gone(run_fail: RunState) -> None:
    run_fail.require()
    status = run_fail.status()
    assert (status["state"], status["exit_status"]) == ("exited", 3), status
    apps = {a["name"]: a for a in status["apps"]}
    assert apps["hello"]["exit_status"] == 0 and apps["hello"]["result"] == "success", apps
    assert apps["fail"]["exit_status"] == 3 and apps["fail"]["result"] == "exit-code", apps
    # The pod shut down while sleeper ran: it was stopped with SIGTERM, which is no failure of its own.
    assert apps["sleeper"]["ended"] == "killed by signal 15", apps
    # handler's post-stop handler failed: a failure, but after fail's (ordered by the guest's exit
    # times, from the record units or the reapers' systemctl show: the same clock).
    assert apps["handler"]["ended"] == "killed by signal 15 (failed)", apps
    assert (run_fail.vols["out"] / "handler.post").read_text() == "post-stop ran\n"
    records = _records(run_fail)  # by record units or reapers: a shutdown may stop a reaper first
    assert int(records["fail"]["ExecMainExitTimestampMonotonic"]) < int(records["handler"]["ExecMainExitTimestampMonotonic"])
    assert f"pod {run_fail.uuid} ended after" in run_fail.stderr
    listed = host_kvmpod("list", env=run_fail.env).stdout
    assert re.search(rf"^{run_fail.uuid}\s+exited\s+3\s", listed, re.M), listed


def test_volume_writes_reach_the_host_and_the_pod_leaves_no_mount(run_fail: RunState) -> None:
    run_fail.require()
    assert (run_fail.vols["out"] / "hello.txt").read_text() == "hi\n", run_fail.where()
    pod = run_fail.pods / run_fail.uuid
    assert not (pod / "stage1").exists(), "the pod's root (its overlay's upper dir) stays only with --keep"
    assert sorted(p.name for p in (pod / "share/apps").iterdir()) == ["fail", "handler", "hello", "sleeper"]
    mounts = Path("/proc/self/mounts").read_text()
    assert str(run_fail.pods) not in mounts


# ---------------------------------------------------------------- run-ok (.aci and OCI apps included)

def _aci(path: Path, rootfs: Path, image_manifest: dict) -> Path:
    manifest = path.with_suffix(".manifest")
    manifest.write_text(json.dumps(image_manifest))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(manifest, arcname="manifest")
        tar.add(rootfs, arcname="rootfs")
    return path


FLOOD_LINES = 12_000


def _run_ok(state: RunState, tmp: Path) -> Iterator[None]:
    out = state.logs / "out"
    out.mkdir(parents=True)
    state.vols["out"] = out
    images = state.logs / "images"
    aci = _aci(images / "two.aci", busybox_rootfs(images / "two-rootfs"), {
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/two",
        "app": {"exec": ["/bin/sh", "-c", "echo two from an aci; echo two > /out/two.txt"], "user": "0", "group": "0",
                "mountPoints": [{"name": "out", "path": "/out"}]}})
    # An OCI layout (the image store unpacks it, fetched once before the run: the run unpacks nothing)
    # whose config gives the command (a bare "sh" found on the image's PATH), env, user, working dir.
    three = busybox_rootfs(images / "three-rootfs")
    (three / "etc").mkdir()
    (three / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n")
    (three / "etc/group").write_text("root:x:0:\nwebgrp:x:1001:\nextra:x:1002:web\n")
    write_oci_layout(str(three), {"Entrypoint": ["sh", "-c"], "Cmd": [
        'echo "three uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd) greeting=$GREETING"'],
        "Env": ["PATH=/bin", "GREETING=hello from oci"], "User": "web", "WorkingDir": "/srv/www"},
        str(images / "three-oci"), ref="example.com/three:1.0")
    state.fetched = host_kvmpod("image", "fetch", f"oci:{images / 'three-oci'}:example.com/three:1.0", env=state.env)
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        # More lines than journald's default rate limit lets through (10,000 per 30 s per unit).
        sh_app("one", f"busybox seq {FLOOD_LINES}; echo one here; busybox tr '\\0' '\\n' < /proc/$$/environ > /out/one.env; "
                      "busybox ip -o link > /out/one.links; echo one > /out/one.txt", [("out", "/out")]),
        {"name": "two", "image": {"name": "example.com/two"}},
        {"name": "three", "image": {"name": "example.com/three"}},
    ], "volumes": [{"name": "out", "kind": "host", "source": str(out)}]}
    # appc allows "." and "-" in names, systemd 252 drops them: the stage1's static busybox passes them.
    manifest["apps"][0]["app"]["environment"] = [{"name": "my.dotted-name", "value": "it arrived"}]
    started = time.monotonic()
    _finish(state, _start(state, manifest, {"one": busybox_rootfs(images / "one"), "two": aci,
                                            "three": f"oci:{images / 'three-oci'}:example.com/three:1.0"}, "--net", "none",
                          "--keep"))
    state.seconds = time.monotonic() - started
    yield


@pytest.fixture(scope="module")
def run_ok(request: pytest.FixtureRequest):
    yield from module_boot(request, type("RunOk", (RunState,), {"LABEL": "run-ok"})(logs=kept_dir("run-ok")), _run_ok)


def test_pod_whose_apps_all_succeed_powers_off_by_itself(run_ok: RunState) -> None:
    run_ok.require()
    assert run_ok.rc == 0, run_ok.where()
    status = run_ok.status()
    assert (status["state"], status["exit_status"], status["how"]) == ("exited", 0, "every app exited successfully")
    assert {a["name"]: a["exit_status"] for a in status["apps"]} == {"one": 0, "two": 0, "three": 0}
    # Every app ended on its own: each end recorded by its record unit, not by a reaper's systemctl.
    records = _records(run_ok)
    assert {a: _by_record_unit(r) for a, r in records.items()} == {"one": True, "two": True, "three": True}, records


def test_an_app_that_prints_many_lines_loses_none(run_ok: RunState) -> None:
    """journald's rate limit dropped an app's lines after 10,000 in 30 s, on their way to the host too:
    the stage1 turns it off (images/stage1.py, JOURNALD_SETTINGS). And the pod powered off while ~7,000
    of them still waited in journald's socket: the record unit now waits until journald has read the
    app's stream to its end (guest/lifecycle.py, DRAIN). And a line reached the host with its tail lost
    (journald's close of /dev/ttyS1 cleared the UART's FIFO while the host read slowly): the stage1 turns
    CTS flow control on for the port, and a close then waits until it has sent all (images/apps_port.py)."""
    run_ok.require()
    want = [str(n) for n in range(1, FLOOD_LINES + 1)]
    journal = run_ok.pods / run_ok.uuid / "stage1/upper/var/log/journal"  # run-ok is kept: its journal persists
    text = subprocess.run(["journalctl", "-D", str(journal), "-o", "cat", "--no-pager", "SYSLOG_IDENTIFIER=one"],
                          capture_output=True, text=True).stdout
    assert [ln for ln in text.splitlines() if ln.isdigit()] == want, run_ok.where()
    # PID 1's own lines (not -u: so early in the boot they may come through the kernel's log, with no UNIT=)
    port = subprocess.run(["journalctl", "-D", str(journal), "-o", "cat", "--no-pager", "SYSLOG_IDENTIFIER=systemd"],
                          capture_output=True, text=True).stdout
    assert "Started kvmpod-apps-port.service - kvmpod apps' output port: CTS flow control on /dev/ttyS1, held open." \
        in port.splitlines(), ([ln for ln in port.splitlines() if "apps-port" in ln], run_ok.where())
    # (its stty exited 0, and its shell holds the port open)
    # Every line whole, in order, none missing, none twice, up to the last one (printed just before the
    # app ended: the pod's end waited for it). A line cut on its way would not be a number here.
    lines = [text for app, text in run_ok.app_lines() if app == "one"]
    numbers = [text for text in lines if text.isdigit()]
    assert numbers == want, ([ln for ln in lines if not ln.isdigit()][:5], len(numbers), run_ok.where())


def test_aci_app_runs_with_its_image_manifest(run_ok: RunState) -> None:
    run_ok.require()
    assert ("two", "two from an aci") in run_ok.app_lines(), run_ok.where()
    assert (run_ok.vols["out"] / "two.txt").read_text() == "two\n"
    assert (run_ok.vols["out"] / "one.txt").read_text() == "one\n"


def test_oci_app_runs_with_its_image_config_from_the_store(run_ok: RunState) -> None:
    run_ok.require()
    # the image's /etc/group puts web in extra (1002) too: a supplementary group, as runc gives it (2665abc)
    assert ("three", "three uid=1000 gid=1001 groups=1001 1002 pwd=/srv/www greeting=hello from oci") \
        in run_ok.app_lines(), run_ok.where()
    digest = run_ok.fetched.stdout.strip()
    assert "unpacking 1 layer" in run_ok.fetched.stderr
    assert f"image example.com/three:1.0: already in the store ({digest})" in run_ok.stderr, run_ok.where()
    assert json.loads((run_ok.pods / run_ok.uuid / "images.json").read_text()) == [digest]
    entry = run_ok.logs / "image-store" / digest.replace(":", "-")
    assert (entry / "rootfs/srv/www").is_dir() and (entry / "manifest").is_file()  # WorkingDir made in the image


def test_a_pod_on_net_none_has_only_loopback(run_ok: RunState) -> None:
    run_ok.require()
    links = [line.split(":")[1].strip() for line in (run_ok.vols["out"] / "one.links").read_text().splitlines()]
    assert links == ["lo"], links
    assert not (run_ok.pods / run_ok.uuid / "net.json").exists()


def test_an_environment_name_systemd_drops_reaches_the_app(run_ok: RunState) -> None:
    run_ok.require()
    environ = (run_ok.vols["out"] / "one.env").read_text().splitlines()
    assert "my.dotted-name=it arrived" in environ, (environ, run_ok.where())
    assert "AC_APP_NAME=one" in environ


def test_the_guest_unpacked_the_units_kvmpod_rendered_on_the_host(run_ok: RunState) -> None:
    """issue 12: kvmpod run renders the units on the host and names their archive on the kernel
    command line; the guest's generator unpacks it instead of starting Python (and the apps above
    ran with those units: their volume, their environment, the pod's end)."""
    run_ok.require()
    argv = json.loads((run_ok.pods / run_ok.uuid / "argv.json").read_text())
    params = argv[argv.index("-append") + 1].split()
    [word] = [p for p in params if p.startswith("kvmpod.units=")]
    sha = word.removeprefix("kvmpod.units=")
    assert re.fullmatch(r"[0-9a-f]{64}", sha), word
    console = (run_ok.pods / run_ok.uuid / "console.log").read_text(errors="replace")
    assert re.search(rf"kvmpod-generator\[\d+\]: unpacked the units kvmpod rendered on the host "
                     rf"\(/var/lib/kvmpod/units/{sha}\.tar\)", console), run_ok.where()
    assert "rendering the units here" not in console


def test_a_kept_pods_guest_journal_is_persistent_and_read_on_the_host(run_ok: RunState) -> None:
    """issue 20: a pod's journal is volatile unless the pod is kept (--keep makes /var/log/journal in its
    upper dir before it boots): then the boot's journal is flushed there and the apps' lines are in it."""
    run_ok.require()
    journal = run_ok.pods / run_ok.uuid / "stage1/upper/var/log/journal"
    proc = subprocess.run(["journalctl", "-D", str(journal), "-o", "short-monotonic", "--no-pager"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and journal.is_dir(), (proc.stderr, run_ok.where())
    assert re.search(r"one\[\d+\]: one here$", proc.stdout, re.M), run_ok.where()
    assert re.search(r"two\[\d+\]: two from an aci$", proc.stdout, re.M)
    assert "Finished systemd-journal-flush.service" in proc.stdout  # the flush ran: its condition held
    assert re.search(r"systemd-journald\[\d+\]: Journal stopped", proc.stdout)  # whole, to the pod's end
    # The journal in the guest's RAM before the flush (and a default pod's, all along) has journald's
    # bound, RuntimeMaxUse= (10% of /run, itself a tmpfs of 10% of the guest's RAM): a flooding app
    # cannot fill the guest's memory through it. journald says it at its start: "Runtime Journal
    # (/run/log/journal/ID) is 512.0K, max 2.0M, 1.5M free."
    found = re.search(r"Runtime Journal \(/run/log/journal/\w+\) is [\d.]+\w?, max ([\d.]+)([KMG])", proc.stdout)
    assert found, proc.stdout[:3000]
    max_mib = float(found.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[found.group(2)]
    assert 0 < max_mib <= 256 / 64, found.group(0)  # 256 MiB guest: at most 1/64 of its RAM (10% of 10%)


# ---------------------------------------------------------------- run-sigint

def _run_sigint(state: RunState, tmp: Path) -> Iterator[None]:
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        sh_app("forever", "echo up; trap 'echo got TERM; exit 0' TERM; while :; do sleep 1; done"),
        {"name": "quick", "image": {"name": "example.com/quick"}},
    ]}
    images = state.logs / "images"
    apps = {"forever": busybox_rootfs(images / "forever")}
    # "quick" is a docker-archive (docker save's format) in the image store, whose gc and rm must
    # keep it while the pod runs and gc removes once it ended.
    quick = images / "quick.tar"
    state.quick_digest = write_docker_archive(str(busybox_rootfs(images / "quick")), {"Cmd": ["sh", "-c", "echo quick done"]},
                                              str(quick), "example.com/quick:1.0")
    apps["quick"] = f"docker-archive:{quick}"
    started = time.monotonic()
    proc = _start(state, manifest, apps)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if re.match(r"^\[\s*[\d.]+\] forever\[\d+\]: up$", line.rstrip("\n")):
                up.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        if not up.wait(RUN_TIMEOUT):
            raise AssertionError("the app 'forever' never printed 'up'")
        # The pod stays up with an app running: give it a moment to prove it does not end by itself.
        time.sleep(5)
        state.stderr = f"still running 5 s after 'up': {proc.poll() is None}\n"
        # The guest's journal while the pod runs (its app started, so past where journald's flush was):
        # nothing of it in the pod's upper dir, the only place the guest writes the pod's root.
        upper = state.pods / state.uuid / "stage1/upper"
        state.upper_while_running = sorted(str(p.relative_to(upper)) for p in upper.glob("var/log/**/*")) \
            if upper.is_dir() else ["(no upper dir)"]
        state.image_gc_running = host_kvmpod("image", "gc", "--older-than", "0s", env=state.env, check=False)
        state.image_rm_running = host_kvmpod("image", "rm", "example.com/quick:1.0", env=state.env, check=False)
        proc.send_signal(signal.SIGINT)
        state.rc = proc.wait(RUN_TIMEOUT)
    except BaseException:
        proc.kill()
        raise
    finally:
        reader.join(10)
        state.stdout = "".join(lines)
        state.stderr += proc.stderr.read() if proc.stderr else ""
        (state.logs / "run.stdout").write_text(state.stdout)
        (state.logs / "run.stderr").write_text(state.stderr)
        state.rc = proc.returncode
    state.seconds = time.monotonic() - started
    state.accelerator = "tcg" if "-accel\ntcg" in _argv_text(state) else "kvm"
    yield


@pytest.fixture(scope="module")
def run_sigint(request: pytest.FixtureRequest):
    yield from module_boot(request, type("RunSigint", (RunState,), {"LABEL": "run-sigint"})(
        logs=kept_dir("run-sigint")), _run_sigint)


def test_app_that_never_exits_keeps_the_pod_up_until_ctrl_c(run_sigint: RunState) -> None:
    run_sigint.require()
    assert run_sigint.stderr.startswith("still running 5 s after 'up': True"), run_sigint.where()
    assert run_sigint.rc == 130, run_sigint.where()
    assert "kvmpod: stopping pod" in run_sigint.stderr


def test_ctrl_c_gives_apps_sigterm_then_powers_off_and_still_reports(run_sigint: RunState) -> None:
    run_sigint.require()
    assert ("forever", "got TERM") in run_sigint.app_lines(), run_sigint.where()
    status = run_sigint.status()
    assert (status["state"], status["exit_status"], status["how"]) == ("exited", 130, "interrupted"), status
    assert {a["name"]: a["ended"] for a in status["apps"]} == {"forever": "exited 0", "quick": "exited 0"}


def test_a_running_pods_guest_journal_is_volatile(run_sigint: RunState) -> None:
    """issue 20: the stage1 has no /var/log/journal, so journald keeps the journal in the guest's RAM
    (/run/log/journal): nothing is written over 9p into the pod's root, and no flush is on the apps' path."""
    run_sigint.require()
    assert "(no upper dir)" not in run_sigint.upper_while_running
    assert not [p for p in run_sigint.upper_while_running if p.startswith("var/log/journal")], \
        (run_sigint.upper_while_running, run_sigint.where())


def test_gc_removes_an_ended_pod(run_sigint: RunState) -> None:
    run_sigint.require()
    proc = host_kvmpod("gc", "--older-than", "0s", env=run_sigint.env)
    assert proc.stdout == f"removed {run_sigint.uuid}\n"
    assert not (run_sigint.pods / run_sigint.uuid).exists()


# ---------------------------------------------------------------- SIGKILL (no full boot)

def _mounted_anywhere(path: str) -> list[str]:
    """Mount points at or under `path` seen by any process on the host, in any mount namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "mountinfo").read_text()
            except OSError:
                continue
            found += [f"{entry.name}: {line.split(' ')[4]}" for line in text.splitlines()
                      if line.split(" ")[4] == path or line.split(" ")[4].startswith(path + "/")]
    return found


def test_sigkill_leaves_no_vm_and_no_mount_and_gc_cleans_it(tmp_path: Path) -> None:
    state = RunState(logs=kept_dir("run-sigkill"))
    # Two apps: one from a directory (copied into the pod's root) and one from the image store, whose
    # rootfs is an overlay of the stored image mounted inside the root's overlay (pods.app_root).
    images = state.logs / "images"
    write_oci_layout(str(busybox_rootfs(images / "stored-rootfs")), {"Entrypoint": ["sh", "-c"],
                     "Cmd": ["exec sleep 100000"], "Env": ["PATH=/bin"]}, str(images / "stored-oci"), ref="example.com/stored:1")
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        sh_app("forever", "exec sleep 100000"), {"name": "stored", "image": {"name": "example.com/stored"}}]}
    proc = _start(state, manifest, {"forever": busybox_rootfs(images / "forever"),
                                    "stored": f"oci:{images / 'stored-oci'}:example.com/stored:1"})
    state_file = state.pods / state.uuid / "state.json"
    deadline = time.monotonic() + 300
    hypervisor = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state_file.is_file() and (hypervisor := json.loads(state_file.read_text()).get("hypervisor_pid")):
            break
        time.sleep(0.2)
    assert hypervisor, f"kvmpod run never started its VM: {proc.communicate()}"
    time.sleep(2)
    # The pod's root is an overlay of the stage1, mounted only in the namespace of kvmpod run and its VM.
    rootfs = str(state.pods / state.uuid / "stage1/rootfs")
    inside = Path(f"/proc/{hypervisor}/mountinfo").read_text()
    assert any(line.split(" ")[4] == rootfs and " - overlay " in line for line in inside.splitlines()), inside
    stored = rootfs + "/opt/stage2/stored/rootfs"
    assert any(line.split(" ")[4] == stored and " - overlay " in line for line in inside.splitlines()), inside
    assert str(state.pods) not in Path("/proc/self/mounts").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{hypervisor}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{hypervisor}").exists(), "the VM outlived its kvmpod run"
    assert str(state.pods) not in Path("/proc/self/mounts").read_text()
    # Nor in any namespace: no process on the host sees a mount (the overlay, a staged volume) of the pod.
    assert _mounted_anywhere(str(state.pods)) == [], "a mount of the killed pod outlived it"
    status = json.loads(host_kvmpod("status", state.uuid, "--json", env=state.env).stdout)
    assert status["state"] == "aborted", status
    assert host_kvmpod("gc", env=state.env).stdout == f"removed {state.uuid}\n"
    assert not (state.pods / state.uuid).exists()
    assert host_kvmpod("list", env=state.env).stdout.splitlines()[1:] == []
    import shutil

    shutil.rmtree(state.logs, ignore_errors=True)


# ---------------------------------------------------------------- kvmpod stop (its own boot)

def test_kvmpod_stop_ends_a_running_pod_like_ctrl_c() -> None:
    state = RunState(logs=kept_dir("run-stop"))
    manifest = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        sh_app("server", "echo serving; trap 'echo stopping cleanly; exit 0' TERM; while :; do sleep 1; done")]}
    proc = _start(state, manifest, {"server": busybox_rootfs(state.logs / "images/server")})
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.rstrip("\n").endswith("server: serving") or re.search(r"server\[\d+\]: serving$", line.rstrip()):
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert serving.wait(RUN_TIMEOUT), f"the app never started: {''.join(lines)}"
        listed = host_kvmpod("list", env=state.env).stdout
        assert re.search(rf"^{state.uuid}\s+running\s", listed, re.M), listed
        stop = host_kvmpod("stop", state.uuid, "--timeout", str(RUN_TIMEOUT), check=False, env=state.env)
        assert (stop.returncode, stop.stderr) == (0, ""), stop
        assert proc.wait(60) == 0, proc.stderr.read()  # stopped, no app failed: the pod's status is 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    assert any(re.search(r"server\[\d+\]: stopping cleanly$", ln.rstrip()) for ln in lines), lines
    status = json.loads(host_kvmpod("status", state.uuid, "--json", env=state.env).stdout)
    assert (status["state"], status["exit_status"]) == ("exited", 0), status
    assert [a["ended"] for a in status["apps"]] == ["exited 0"], status
    import shutil

    shutil.rmtree(state.logs, ignore_errors=True)
