"""Boot A: one valid pod, booted once, every scenario read from what the guest left behind.

The host helper builds the QEMU argv (`kvmpod args --format json`) and stages the manifest and the
network description (`kvmpod stage`); kvmpod-generator in the guest does the rest at boot. Each app
is a busybox script that writes its findings into the host volume `results`; the harness's own
finishing unit waits for them and for the host's ping, runs `kvmpod status --json`, and powers off.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import pytest

from kvmpod.host.pods.prerendered_units import render_units

from . import boot, guestimage
from .conftest import BootState, module_boot
from .kvmpod_guest import (WAIT_FOR_RESULTS, Netns, argv_value, drop_export, finish_unit, host_kvmpod,
                           install_guest_script, install_guest_unit, install_kvmpod, kept_dir, make_app_rootfs,
                           pod_uuid, qemu_args, write_json)

pytestmark = pytest.mark.e2e

# Generous: boots take 40-70 s alone, but several engineers' TCG guests share two cores, and then a
# boot took 200-400 s to bring eth0 up and 80 s for `kvmpod status`. Everything below waits for
# events, so a quick boot stays quick.
TIMEOUT = 900.0
HOST_IP, GUEST_IP, PREFIX = "10.99.0.1", "10.99.0.2", 24
TAP = "kvmpode2e0"
PING_SECONDS = 600.0  # the host keeps trying this long from QEMU's start (boots take 40-70 s here)

# Every argument the ExecStart= quoting must carry through systemd untouched.
HOSTILE_ARGS = ["two words", "it's", '"double"', "$HOME", "${HOME}", "100%", "%n", "back\\slash",
                "trailing\\", "a;b", ";", "tab\there", "", "'single quoted'"]
ARGV_SCRIPT = 'for a in "$@"; do printf "%s\\n" "$a"; done > /results/argv.txt; echo > /results/argv.done'

PEER_SCRIPT = """me={me}; other={other}
echo "from $me" > /shared/$me
i=0
while [ ! -e /shared/$other ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
{{ echo "saw=$(cat /shared/$other 2>&1)"; echo "stat=$(stat -c '%a %u %g' /shared)"; echo "id=$(id -u):$(id -g)"; }} > /results/$me.txt
echo > /results/$me.done
"""

APPS: dict[str, dict] = {
    # (1) rw host volume
    "writer": {"script": 'echo "written by writer as $(id -u)" > /out/hello.txt; echo > /results/writer.done',
               "mounts": [("rwvol", "/out")]},
    # (2) read-only host volume
    "roprobe": {"script": ('cat /ro/existing.txt > /results/roprobe.read 2>&1; '
                           'if ( echo x > /ro/try ) 2> /results/roprobe.err; then echo WROTE > /results/roprobe.txt; '
                           'else cat /results/roprobe.err > /results/roprobe.txt; fi; echo > /results/roprobe.done'),
                "mounts": [("rovol", "/ro")]},
    # (3) one empty volume (0770, 1000:1000) shared by two apps
    "peer-a": {"script": PEER_SCRIPT.format(me="peer-a", other="peer-b"), "mounts": [("shared", "/shared")]},
    "peer-b": {"script": PEER_SCRIPT.format(me="peer-b", other="peer-a"), "mounts": [("shared", "/shared")]},
    # A non-root app: user 1000 exists neither in its rootfs nor in the guest's /etc/passwd.
    "uidapp": {"script": 'echo "$(id -u):$(id -g)" > /results/uidapp.txt; echo > /results/uidapp.done',
               "mounts": [("shared", "/shared")], "user": "1000", "group": "1000"},
    # (4) nested mount paths, and a mount path through a symlink inside the app's rootfs
    "nester": {"script": 'echo outer > /data/o.txt; echo inner > /data/inner/i.txt; echo > /results/nester.done',
               "mounts": [("outer", "/data"), ("inner", "/data/inner")]},
    # … and through an absolute symlink below the top of the rootfs, chained to a relative one there:
    # /deep/er/link -> /hop/rel -> ../real/deep (tests/guest/generator_cases/nested-symlinks-absolute-at-depth)
    "linker": {"script": ('echo via-link > /link/sub/s.txt; echo via-nested > /deep/er/link/sub/n.txt; '
                          'echo > /results/linker.done'),
               "mounts": [("linkvol", "/link/sub"), ("nestvol", "/deep/er/link/sub")]},
    # (6) its volume's tag is not exported by the host
    "orphan": {"script": 'echo ran > /results/orphan.txt', "mounts": [("missing", "/m")]},
    # ExecStart= quoting on a real systemd
    "argv": {"exec": ["/bin/busybox", "sh", "-c", ARGV_SCRIPT, "argv0", *HOSTILE_ARGS], "mounts": []},
}
DONE = [a for a in APPS if a != "orphan"]
HOST_VOLUMES = {"results": False, "rwvol": False, "rovol": True, "outer": False, "inner": False,
                "linkvol": False, "nestvol": False, "missing": False}

FINISH_SCRIPT = """#!/bin/sh
# kvmpod e2e (boot A): wait for the apps and the host's ping, record the pod's status, power off.
""" + WAIT_FOR_RESULTS + """i=0
while :; do
  missing=""
  for d in @DONE@; do [ -e $r/$d.done ] || missing="$missing $d"; done
  [ -z "$missing" ] || [ $i -ge 90 ] && break
  sleep 1; i=$((i+1))
done
log "apps finished after ${i}s; missing:${missing:- none}"
i=0
while [ ! -e $r/ping-done ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
log "ping-done after ${i}s: $(cat $r/ping-done 2>&1)"
cat /proc/net/snmp > $r/snmp.txt  # the guest's own ICMP counters: only a real ping moves them
kvmpod status --json > $r/status.json 2> $r/status.err
echo $? > $r/status.rc
/usr/local/sbin/kvmpod-e2e-record-dbus > $r/dbus-record.json 2> $r/dbus-record.err
systemctl show orphan.service -p ActiveState -p SubState -p Result > $r/orphan.show
ip -4 -o address show dev eth0 > $r/eth0.txt 2>&1
# kvmpod run on a systemd host (this guest): a transient unit in machine.slice, started over D-Bus.
# The "hypervisor" is a stand-in on PATH that records its argv and its cgroup.
w=/var/tmp/kvmpod-run
kvmpod args --hypervisor qemu --manifest $w/pod.json --rootfs $w/stage1 --uuid @RUN_UUID@ --accel tcg \
  --format lines > $r/run-args.txt 2>&1
kvmpod run --hypervisor qemu --manifest $w/pod.json --rootfs $w/stage1 --uuid @RUN_UUID@ --accel tcg \
  > $r/run.out 2> $r/run.err
echo $? > $r/run.rc
i=0
while [ ! -e $r/run-argv.txt ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
find /run/systemd/generator -newer /etc/machine-id > $r/generated.txt 2>&1
# issue 12: the units the host rendered from this root with this boot's kernel command line
# (kvmpod.host.pods.prerendered_units, what kvmpod run boots with) are the ones this guest's Python
# generator wrote here: the same files, texts and links.
p=/tmp/kvmpod-e2e-prerendered
mkdir -p $p && tar -x -f /var/tmp/kvmpod-e2e-prerendered.tar -C $p
(cd $p && find . ! -type d ! -name .kvmpod-prerendered) | sort > $r/prerendered-list.txt
while read -r f; do
  g=/run/systemd/generator/$f
  if [ -L "$p/$f" ]; then
    [ -L "$g" ] && [ "$(readlink "$p/$f")" = "$(readlink "$g")" ] || echo "differs: $f"
  else
    cmp -s "$p/$f" "$g" || echo "differs: $f"
  fi
done < $r/prerendered-list.txt > $r/prerendered-diff.txt 2>&1
sync
log done
"""

FINISH_UNIT = finish_unit('collect results', 'mnt-results.mount network.target', 840)


def manifest() -> dict:
    apps = []
    for name, spec in APPS.items():
        exec_ = spec.get("exec") or ["/bin/busybox", "sh", "-c", spec["script"]]
        mounts = [{"volume": "results", "path": "/results"}] + [{"volume": v, "path": p} for v, p in spec["mounts"]]
        apps.append({
            "name": name,
            "image": {"name": f"example.com/kvmpod-e2e-{name}"},
            "app": {"exec": exec_, "user": spec.get("user", "0"), "group": spec.get("group", "0")},
            "mounts": mounts,
        })
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps, "volumes": []}


@dataclass
class BootA(BootState):
    LABEL: ClassVar[str] = "A"
    vols: dict[str, Path] = field(default_factory=dict)
    root: Path | None = None
    ping: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def results(self) -> Path:
        return self.vols["results"]

    def output_dir(self) -> Path | None:
        return self.vols.get("results")

    def status(self) -> dict[str, dict]:
        return {u["name"]: u for u in json.loads(self.read("status.json"))}


# Records systemd's D-Bus answers in the guest, for tests/guest/test_status_replay.py's fixture.
DBUS_REPLAY = Path(__file__).resolve().parent.parent / "guest" / "dbus_replay.py"
RUN_UUID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
RECORDER = """#!/bin/sh
# Stands in for QEMU under `kvmpod run`: records how it was started.
printf '%s\\n' "$0" "$@" > /mnt/results/run-argv.tmp
cat /proc/self/cgroup > /mnt/results/run-cgroup.txt
mv /mnt/results/run-argv.tmp /mnt/results/run-argv.txt
"""


def _lay_out_run_check(root: Path) -> None:
    """A pod, stage1 tree and stand-in hypervisor in the guest, for `kvmpod run` under its systemd."""
    work = root / "var/tmp/kvmpod-run"
    (work / "stage1").mkdir(parents=True)
    (work / "stage1/vmlinuz").write_text("")
    write_json(work / "pod.json", {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "vm", "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}}]})
    install_guest_script(root, "/usr/local/bin/qemu-system-x86_64", RECORDER)


def _ping_until_answered(ns: Netns, results: Path, record: list[str], stop: threading.Event) -> None:
    deadline = time.monotonic() + PING_SECONDS
    tries = 0
    outcome = "failed"
    while time.monotonic() < deadline and not stop.is_set():
        tries += 1
        proc = ns.ping(GUEST_IP)
        if proc.returncode == 0:
            outcome = "answered"
            record.append(proc.stdout)
            break
        stop.wait(1.0)
    record.insert(0, f"{outcome} after {tries} tries")
    # Written either way, so the guest stops waiting; the test reads the outcome.
    (results / "ping-done").write_text(record[0] + "\n")


def _run_boot(state: BootA, tmp: Path) -> Iterator[None]:
    image = guestimage.ensure_image()
    vols = state.logs / "volumes"
    for name in HOST_VOLUMES:
        (vols / name).mkdir(parents=True)
        state.vols[name] = vols / name
    state.results.chmod(0o777)  # peer-a/peer-b run as uid 1000
    (state.vols["rovol"] / "existing.txt").write_text("ro content\n")

    pod = manifest()
    pod["volumes"] = [{"name": n, "kind": "host", "source": str(state.vols[n]), "readOnly": ro}
                      for n, ro in HOST_VOLUMES.items()]
    pod["volumes"].append({"name": "shared", "kind": "empty", "mode": "0770", "uid": 1000, "gid": 1000})
    pod_file = write_json(state.logs / "pod.json", pod)
    networks = write_json(state.logs / "networks.json", [
        {"name": "e2e", "tap": TAP, "hostIP": HOST_IP, "guestIP": GUEST_IP, "prefix": PREFIX}])
    uuid = pod_uuid()

    tmp.parent.mkdir(parents=True, exist_ok=True)
    with boot.private_root(image, tmp) as root:
        state.root = root
        state.install = install_kvmpod(root, state.logs)
        for name in APPS:
            make_app_rootfs(root, name)
        linker = root / "opt/stage2/linker/rootfs"
        (linker / "real/dir").mkdir(parents=True)
        (linker / "link").symlink_to("/real/dir")  # absolute: must resolve inside the app's rootfs
        (linker / "real/deep").mkdir()
        (linker / "hop").mkdir()
        (linker / "hop/rel").symlink_to("../real/deep")
        (linker / "deep/er").mkdir(parents=True)
        (linker / "deep/er/link").symlink_to("/hop/rel")  # absolute below the top: not /deep/er/hop/rel
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-record-dbus",
                             "#!/usr/bin/python3\n" + DBUS_REPLAY.read_text())
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-finish",
                             FINISH_SCRIPT.replace("@DONE@", " ".join(DONE)).replace("@RUN_UUID@", RUN_UUID))
        _lay_out_run_check(root)
        install_guest_unit(root, "kvmpod-e2e-finish.service", FINISH_UNIT)

        common = ["--manifest", str(pod_file), "--rootfs", str(root), "--uuid", uuid, "--networks", str(networks)]
        host_kvmpod("stage", *common)
        console = state.logs / "console.log"
        out = qemu_args(common, image, console)
        full = json.loads(out.stdout)
        (state.logs / "kvmpod-args.json").write_text(out.stdout)
        state.argv = drop_export(full, "missing")  # (6): the host does not export this volume's tag
        units = render_units(str(root), argv_value(state.argv, "-append"))  # compared in the guest (issue 12)
        (root / "var/tmp/kvmpod-e2e-prerendered.tar").write_bytes(units.archive)
        state.accelerator = argv_value(state.argv, "-accel")
        print(f"kvmpod-e2e: boot A with accelerator {state.accelerator}, kvmpod installed from {state.install}")

        stop = threading.Event()
        with Netns(f"kvmpod-e2e-{uuid[:8]}", TAP, f"{HOST_IP}/{PREFIX}") as ns:
            pinger = threading.Thread(target=_ping_until_answered, args=(ns, state.results, state.ping, stop))
            pinger.start()
            try:
                state.seconds = boot.run_until_poweroff(state.argv, root, state.logs, console, state.accelerator,
                                                        timeout=TIMEOUT, wrapper=ns.wrapper)
            finally:
                stop.set()
                pinger.join()
        yield


@pytest.fixture(scope="module")
def boot_a(request: pytest.FixtureRequest):
    yield from module_boot(request, BootA(logs=kept_dir("boot-a")), _run_boot)


# ---------------------------------------------------------------- scenarios

def test_units_rendered_on_the_host_are_the_ones_the_guest_wrote(boot_a: BootA) -> None:
    """What kvmpod run's guests unpack (rendered on the host from the host's view of the root) is
    what the Python generator wrote in this guest from its 9p view, for boot A's pod."""
    boot_a.require()
    listed = (boot_a.results / "prerendered-list.txt").read_text().splitlines()
    assert len(listed) > 20 and "./linker.service" in listed, boot_a.where()
    assert (boot_a.results / "prerendered-diff.txt").read_text() == "", boot_a.where()


def test_rw_host_volume_write_reaches_host(boot_a: BootA) -> None:
    boot_a.require()
    hello = boot_a.vols["rwvol"] / "hello.txt"
    assert hello.is_file(), f"the app's write did not reach {hello} {boot_a.where()}"
    assert hello.read_text() == "written by writer as 0\n"


def test_read_only_host_volume_refuses_writes(boot_a: BootA) -> None:
    boot_a.require()
    assert boot_a.read("roprobe.read") == "ro content\n", "the read-only volume is not the host directory"
    assert not (boot_a.vols["rovol"] / "try").exists(), f"a write went through the read-only volume {boot_a.where()}"
    error = boot_a.read("roprobe.txt")
    assert "WROTE" not in error
    assert error.strip() == "sh: can't create /ro/try: Read-only file system", boot_a.where()


@pytest.mark.parametrize("me,other", [("peer-a", "peer-b"), ("peer-b", "peer-a")])
def test_empty_volume_shared_with_mode_uid_gid(boot_a: BootA, me: str, other: str) -> None:
    boot_a.require()
    lines = boot_a.read(f"{me}.txt").splitlines()
    assert lines == [f"saw=from {other}", "stat=770 1000 1000", "id=0:0"], boot_a.where()
    # An empty volume lives in the guest: nothing of it may appear on the host's volumes.
    assert not any((v / me).exists() for v in boot_a.vols.values())


def test_nested_mount_paths_land_in_their_volumes(boot_a: BootA) -> None:
    boot_a.require()
    outer, inner = boot_a.vols["outer"], boot_a.vols["inner"]
    assert (outer / "o.txt").read_text() == "outer\n", boot_a.where()
    assert (inner / "i.txt").read_text() == "inner\n", boot_a.where()
    # /data/inner is mounted over the outer volume: the mount point exists there, empty.
    assert (outer / "inner").is_dir() and list((outer / "inner").iterdir()) == [], boot_a.where()


def test_mount_through_symlink_stays_inside_app_rootfs(boot_a: BootA) -> None:
    boot_a.require()
    assert (boot_a.vols["linkvol"] / "s.txt").read_text() == "via-link\n", boot_a.where()
    assert boot_a.root is not None
    rootfs = boot_a.root / "opt/stage2/linker/rootfs"
    assert (rootfs / "link").is_symlink(), "the symlink in the app's rootfs was replaced"
    assert (rootfs / "real/dir/sub").is_dir(), "the mount point is not where the symlink points inside the app"
    assert not (boot_a.root / "real").exists(), "the mount followed /real/dir in the guest's own root"


def test_mount_through_absolute_symlink_below_the_top_restarts_at_app_rootfs(boot_a: BootA) -> None:
    boot_a.require()
    assert (boot_a.vols["nestvol"] / "n.txt").read_text() == "via-nested\n", boot_a.where()
    assert boot_a.root is not None
    rootfs = boot_a.root / "opt/stage2/linker/rootfs"
    assert (rootfs / "deep/er/link").is_symlink() and (rootfs / "hop/rel").is_symlink()
    assert (rootfs / "real/deep/sub").is_dir(), "the mount point is not where the chain ends inside the app"
    assert not (rootfs / "deep/er/hop").exists(), "the absolute link was followed from its own directory"


def test_app_whose_volume_is_not_exported_does_not_start(boot_a: BootA) -> None:
    boot_a.require()
    assert not (boot_a.results / "orphan.txt").exists(), f"orphan ran without its volume {boot_a.where()}"
    show = dict(line.split("=", 1) for line in boot_a.read("orphan.show").splitlines() if "=" in line)
    assert show == {"ActiveState": "inactive", "SubState": "dead", "Result": "success"}, show
    journal = (boot_a.logs / "journal.txt").read_text()
    assert "Dependency failed for orphan.service - kvmpod app orphan." in journal, boot_a.where()
    assert "orphan.service: Job orphan.service/start failed with result 'dependency'." in journal
    # Every other app did start and finish.
    for app in DONE:
        assert (boot_a.results / f"{app}.done").exists(), f"{app} did not finish {boot_a.where()}"


def test_status_json_lists_every_unit_and_names_the_failed_mount(boot_a: BootA) -> None:
    boot_a.require()
    assert boot_a.read("status.err") == ""
    assert boot_a.read("status.rc").strip() == "1", "status must report the pod unwell (orphan)"
    status = boot_a.status()
    volumes = {"mnt-" + v + ".mount" for v in HOST_VOLUMES} | {"kvmpod-empty-volume-shared.service"}
    apps = {f"{a}.service" for a in APPS}
    assert {n for n, u in status.items() if u["kind"] == "volume"} == volumes
    assert {n for n, u in status.items() if u["kind"] == "app"} == apps
    # The guest's own database has no uid 1000: the generator's sysusers oneshot adds it; eth0's unit
    # sets the address the host pings.
    assert {n: u["active_state"] for n, u in status.items() if u["kind"] == "setup"} == {
        "kvmpod-app-ids.service": "active", "kvmpod-network-eth0.service": "active"}
    mounts = {n for n, u in status.items() if u["kind"] == "mount"}
    want_mounts = sum(len(spec["mounts"]) + 1 for spec in APPS.values())
    assert len(mounts) == want_mounts, sorted(mounts)
    assert all(m.startswith("opt-stage2-") and m.endswith(".mount") for m in mounts)

    missing = status["mnt-missing.mount"]
    assert (missing["active_state"], missing["result"]) == ("failed", "exit-code"), missing
    orphan = status["orphan.service"]
    assert orphan["active_state"] == "inactive"
    assert orphan["reason"] == "not started: required mnt-missing.mount failed", orphan
    unwell = {n for n, u in status.items() if u["reason"]}
    orphan_mounts = {m for m in mounts if m.startswith("opt-stage2-orphan-rootfs-m")}
    assert unwell == {"mnt-missing.mount", "orphan.service", *orphan_mounts}, {n: status[n] for n in unwell}
    for name in volumes - {"mnt-missing.mount"}:
        assert status[name]["active_state"] == "active", status[name]


def test_guest_answers_ping_on_its_nic(boot_a: BootA) -> None:
    boot_a.require()
    assert boot_a.ping and boot_a.ping[0].startswith("answered"), f"{boot_a.ping} {boot_a.where()}"
    assert f"inet {GUEST_IP}/{PREFIX}" in boot_a.read("eth0.txt")
    # The guest's side (not the host thread's own note): its kernel received echo requests and replied.
    icmp = [line.split()[1:] for line in boot_a.read("snmp.txt").splitlines() if line.startswith("Icmp:")]
    counters = dict(zip(icmp[0], map(int, icmp[1])))
    assert counters["InEchos"] >= 1 and counters["OutEchoReps"] >= 1, counters


def test_exec_arguments_survive_execstart_quoting(boot_a: BootA) -> None:
    boot_a.require()
    text = boot_a.read("argv.txt")
    assert text.split("\n")[:-1] == HOSTILE_ARGS, (text, boot_a.where())


def test_non_root_app_starts_with_its_numeric_uid(boot_a: BootA) -> None:
    boot_a.require()
    journal = (boot_a.logs / "journal.txt").read_text()
    assert "uidapp.service: Failed to determine user credentials" not in journal
    assert boot_a.read("uidapp.txt") == "1000:1000\n", boot_a.where()


def test_kvmpod_run_starts_a_transient_unit_in_machine_slice(boot_a: BootA) -> None:
    """`kvmpod run` on a host that runs systemd (the guest is one): pystemd starts the argv that
    `kvmpod args` prints, resolved to an absolute path, as kvmpod-<uuid>.service in machine.slice."""
    boot_a.require()
    assert (boot_a.read("run.rc").strip(), boot_a.read("run.err")) == ("0", ""), boot_a.where()
    assert boot_a.read("run.out") == f"kvmpod-{RUN_UUID}.service\n"
    args = boot_a.read("run-args.txt").splitlines()
    ran = boot_a.read("run-argv.txt").splitlines()
    assert ran == ["/usr/local/bin/qemu-system-x86_64", *args[1:]], boot_a.where()
    assert f"/machine.slice/kvmpod-{RUN_UUID}.service" in boot_a.read("run-cgroup.txt"), boot_a.where()


def test_status_reader_replays_the_dbus_answers_recorded_in_this_boot(boot_a: BootA) -> None:
    """The recorder asked systemd what `kvmpod status` asks, and got what status printed; replaying its
    record on the host gives the same states. Set KVMPOD_RECORD_STATUS_FIXTURE=PATH to keep the
    record as the fast tests' fixture (tests/guest/fixtures/README)."""
    from kvmpod.guest.status import PodUnit, _read_unit, render_json, unit_states

    from guest.dbus_replay import replay_class

    boot_a.require()
    assert boot_a.read("dbus-record.err") == "", boot_a.where()
    record = json.loads(boot_a.read("dbus-record.json"))
    assert record["states"] == json.loads(boot_a.read("status.json"))
    replay = replay_class(record["dbus"])
    replayed = unit_states([PodUnit(n, k) for n, k in record["units"]], lambda name: _read_unit(replay, name))
    assert json.loads(render_json(replayed)) == record["states"]
    if os.environ.get("KVMPOD_RECORD_STATUS_FIXTURE"):
        Path(os.environ["KVMPOD_RECORD_STATUS_FIXTURE"]).write_text(boot_a.read("dbus-record.json"))
