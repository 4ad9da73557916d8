"""kvmpod status: which units it reports, and how it explains a unit that is not running.

systemd is replaced by a table of states (the D-Bus read is the edge; the guest boot in tests/e2e
runs the real thing).
"""

import json
from pathlib import Path

from kvmpod.cli import pod_status
from kvmpod.status import RawState, render_json, render_table

EXAMPLE_ROOT = str(Path(__file__).parent.parent / "generator/kvmpod/examples/appc-pod/root")


def state(active: str, result: str = "success", requires: tuple[str, ...] = (), load: str = "loaded") -> RawState:
    sub = {"active": "running", "failed": "failed", "inactive": "dead"}[active]
    return RawState(load, active, sub, result, requires)


SYSTEMD = {
    "kvmpod-empty-volume-buildoutput.service": state("active"),
    "mnt-dbvolume.mount": state("failed", "exit-code"),
    "opt-stage2-backup-rootfs-mnt-db.mount": state("inactive", requires=("mnt-dbvolume.mount",)),
    "opt-stage2-backup-rootfs-mnt-out.mount": state("active"),
    "opt-stage2-reduce\\x2dworker-rootfs-var-lib-db.mount": state("inactive", requires=("mnt-dbvolume.mount",)),
    "backup.service": state("inactive", requires=("opt-stage2-backup-rootfs-mnt-db.mount",)),
    "reduce-worker.service": state("inactive", requires=("opt-stage2-reduce\\x2dworker-rootfs-var-lib-db.mount",)),
    "register.service": state("active"),
}


def test_status_of_the_example_pod_with_its_host_volume_missing():
    states = pod_status("/etc/kvmpod/pod.json", EXAMPLE_ROOT, SYSTEMD.__getitem__)

    assert render_table(states) == (
        "UNIT                                                 KIND    STATE             REASON\n"
        "kvmpod-empty-volume-buildoutput.service              volume  active (running)  -\n"
        "mnt-dbvolume.mount                                   volume  failed (failed)   failed: exit-code\n"
        "opt-stage2-backup-rootfs-mnt-db.mount                mount   inactive (dead)   not started: required mnt-dbvolume.mount failed\n"
        "opt-stage2-backup-rootfs-mnt-out.mount               mount   active (running)  -\n"
        "opt-stage2-reduce\\x2dworker-rootfs-var-lib-db.mount  mount   inactive (dead)   not started: required mnt-dbvolume.mount failed\n"
        "backup.service                                       app     inactive (dead)   not started: required mnt-dbvolume.mount failed\n"
        "reduce-worker.service                                app     inactive (dead)   not started: required mnt-dbvolume.mount failed\n"
        "register.service                                     app     active (running)  -\n"
    )


def test_json_has_every_field_per_unit():
    states = pod_status("/etc/kvmpod/pod.json", EXAMPLE_ROOT, SYSTEMD.__getitem__)

    first = json.loads(render_json(states))[1]

    assert first == {"name": "mnt-dbvolume.mount", "kind": "volume", "load_state": "loaded",
                     "active_state": "failed", "sub_state": "failed", "result": "exit-code",
                     "reason": "failed: exit-code"}


def test_a_unit_systemd_does_not_know_is_named():
    states = pod_status("/etc/kvmpod/pod.json", EXAMPLE_ROOT,
                        lambda name: state("inactive", load="not-found") if name == "register.service"
                        else state("active"))

    assert [(s.name, s.reason) for s in states if s.reason] == [("register.service", "unit not-found")]
