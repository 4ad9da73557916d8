"""The lifecycle's scripts, run by a real shell: the reaper's ExecStop= against a stand-in systemctl,
and the record unit's ExecStart= with the variables systemd gives it."""

import os
import subprocess
from pathlib import Path

import pytest

from kvmpod.guest import lifecycle

SHOW_STARTED = ("Result=success\nExecMainCode=1\nExecMainStatus=0\nExecMainStartTimestampMonotonic=71729365\n"
                "ExecMainExitTimestampMonotonic=77416876\n")
SHOW_NEVER_STARTED = ("Result=success\nExecMainCode=0\nExecMainStatus=0\nExecMainStartTimestampMonotonic=0\n"
                      "ExecMainExitTimestampMonotonic=0\n")


def _run(tmp_path: Path, shown: str, recorded: str | None = None) -> tuple[str | None, list[str]]:
    """The record the script wrote for app `web` (`recorded`: the record there before it ran) and every
    systemctl call it made."""
    exits = tmp_path / "apps"
    exits.mkdir()
    if recorded is not None:
        (exits / "web").write_text(recorded)
    calls = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\ncase $1 in show) printf '%s' '{shown}';; esac\n")
    fake.chmod(0o755)
    script = lifecycle.REAPER_SCRIPT.replace(lifecycle.SYSTEMCTL, str(fake)).replace(lifecycle.EXITS_DIR, str(exits))
    subprocess.run(["/bin/sh", "-c", script, "kvmpod-reaper", "web"], check=True)
    record = exits / "web"
    assert os.listdir(exits) in ([], ["web"])  # the record only, nothing beside it
    return (record.read_text() if record.exists() else None), calls.read_text().splitlines() if calls.exists() else []


def test_an_app_that_ran_is_recorded_with_one_systemctl_and_no_poweroff(tmp_path: Path) -> None:
    record, calls = _run(tmp_path, SHOW_STARTED)
    assert record == SHOW_STARTED
    assert len(calls) == 1 and calls[0].startswith("show -p Result") and calls[0].endswith("web.service")


@pytest.mark.parametrize("shown", [SHOW_NEVER_STARTED, ""])
def test_an_app_that_never_started_is_recorded_and_powers_the_pod_off(tmp_path: Path, shown: str) -> None:
    record, calls = _run(tmp_path, shown)
    assert record == shown or (shown == "" and record == "\n")
    assert calls[-1] == "--no-block poweroff"


def test_a_start_time_that_only_begins_with_zero_digits_is_not_read_as_started(tmp_path: Path) -> None:
    _, calls = _run(tmp_path, SHOW_NEVER_STARTED.replace("Monotonic=0\nExecMainExit", "Monotonic=\nExecMainExit"))
    assert calls[-1] == "--no-block poweroff"


def test_an_app_its_record_unit_recorded_is_not_shown_again(tmp_path: Path) -> None:
    recorded = "Result=success\nExecMainCode=1\nExecMainStatus=0\nExecMainExitTimestampMonotonic=5\n"
    record, calls = _run(tmp_path, SHOW_STARTED, recorded)
    assert calls == [] and record == recorded


# ---------------------------------------------------------------- kvmpod-ended-/kvmpod-failed-<app>.service

def _record(tmp_path: Path, **env: str) -> tuple[str | None, int]:
    """The record RECORD_SCRIPT writes for app `web` with systemd's MONITOR_ variables `env`, and its status."""
    exits = tmp_path / "apps"
    exits.mkdir(exist_ok=True)
    script = lifecycle.RECORD_SCRIPT.replace(lifecycle.EXITS_DIR, str(exits))
    clean = {k: v for k, v in os.environ.items() if k not in lifecycle.MONITOR_VARIABLES}
    done = subprocess.run(["/bin/sh", "-c", script, "kvmpod-record", "web"],
                          env={**clean, **{f"MONITOR_{k}": v for k, v in env.items()}})
    assert [p.name for p in exits.iterdir() if p.name.startswith(".")] == []
    record = exits / "web"
    return (record.read_text() if record.exists() else None), done.returncode


def _fields(record: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in record.splitlines())


@pytest.mark.parametrize("code,status,want_code,want_status", [
    ("exited", "0", "1", "0"), ("exited", "42", "1", "42"), ("exited", "255", "1", "255"),
    ("killed", "TERM", "2", "15"), ("killed", "KILL", "2", "9"), ("dumped", "SEGV", "3", "11"),
    ("killed", "HUP", "2", "1"), ("killed", "SYS", "2", "31"), ("killed", "RTMIN+3", "2", "37")])
def test_the_record_keeps_waitids_numbers(tmp_path: Path, code: str, status: str, want_code: str,
                                          want_status: str) -> None:
    result = "success" if status in ("0", "TERM") else "exit-code"
    record, _ = _record(tmp_path, SERVICE_RESULT=result, EXIT_CODE=code, EXIT_STATUS=status)
    assert record is not None
    fields = _fields(record)
    assert (fields["Result"], fields["ExecMainCode"], fields["ExecMainStatus"]) == (result, want_code, want_status)
    assert "ExecMainStartTimestampMonotonic" not in fields


def test_the_records_exit_time_is_the_uptime_in_microseconds(tmp_path: Path) -> None:
    before = float(Path("/proc/uptime").read_text().split()[0])
    record, _ = _record(tmp_path, SERVICE_RESULT="success", EXIT_CODE="exited", EXIT_STATUS="0")
    after = float(Path("/proc/uptime").read_text().split()[0])
    exited = int(_fields(record)["ExecMainExitTimestampMonotonic"]) / 1e6
    assert before - 0.01 <= exited <= after + 0.01


def test_the_host_reads_the_record_as_an_app_that_ran(tmp_path: Path) -> None:
    from kvmpod.host.pods.pod_dirs import exit_problem, parse_exit

    record, _ = _record(tmp_path, SERVICE_RESULT="signal", EXIT_CODE="killed", EXIT_STATUS="KILL")
    assert exit_problem(record) is None
    end = parse_exit("web", record)
    assert end.started and end.code == "killed" and end.exit_status == 137 and end.failed and end.exited_at_us > 0


@pytest.mark.parametrize("env", [
    {},  # the main process never ran (a pre-start handler failed): systemd sets no $EXIT_CODE
    {"SERVICE_RESULT": "exit-code"},
    {"SERVICE_RESULT": "success", "EXIT_CODE": "exited"},
    {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "NOSUCH"},
    {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "RTMIN+x"},
    {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "1; touch /tmp/x"},
    {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "1000"},
    {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "other", "EXIT_STATUS": "1"},
])
def test_no_record_when_systemd_said_nothing_the_record_can_hold(tmp_path: Path, env: dict[str, str]) -> None:
    record, _ = _record(tmp_path, **env)
    assert record is None  # the reaper records it with systemctl show


def test_the_app_starts_its_record_unit_when_it_ends_either_way_and_the_unit_pins_the_reaper() -> None:
    outputs = {o.path: o.content for o in lifecycle.plan_lifecycle(["web"], "kvmpod_pod", "/etc/kvmpod/pod.json", None)}
    dropin = outputs[f"web.service.d/{lifecycle.DROPIN_NAME}"]
    assert "OnSuccess=kvmpod-ended-web.service\n" in dropin
    assert "OnFailure=kvmpod-failed-web.service poweroff.target\n" in dropin
    for record in (outputs["kvmpod-ended-web.service"], outputs["kvmpod-failed-web.service"]):
        # Requisite= (not Wants=): never starts the reaper, but holds off its StopWhenUnneeded= stop
        assert "Requisite=kvmpod-reaper-web.service kvmpod-pod-end.service\n" in record and "Wants=" not in record
        assert "Before=shutdown.target\n" in record and "Conflicts=" not in record
        assert "kvmpod-record web\n" in record
    # the app (not its reaper) wants the pod's end: it powers off without waiting for the reaper's stop
    assert "Wants=kvmpod-reaper-web.service kvmpod-pod-end.service\n" in dropin
    assert "Wants=" not in outputs["kvmpod-reaper-web.service"]
    # nor ordered after it: its stop would come first, and the poweroff would wait for it
    assert "kvmpod-pod-end" not in outputs["kvmpod-reaper-web.service"]
    assert "After=kvmpod-reaper-web.service kvmpod-pod-end.service\n" in dropin
    # the pod's end starts the pod-done unit when it stops, in job mode fail (refused in a shutdown),
    # which powers off at once; no systemctl on the way
    end, done = outputs["kvmpod-pod-end.service"], outputs["kvmpod-pod-done.target"]
    assert "OnSuccess=kvmpod-pod-done.target\nOnSuccessJobMode=fail\n" in end and "Action=" not in end
    assert "StopWhenUnneeded=yes\nSuccessAction=poweroff-immediate\n" in done
    assert "Conflicts=shutdown.target\n" in done
    # the apps' port's holder stopped first, so its last close drains the port (host/images/apps_port.py)
    assert "Conflicts=kvmpod-apps-port.service\nAfter=kvmpod-apps-port.service\n" in done
    assert "systemctl" not in end + done


def test_the_record_unit_leaves_a_record_the_reaper_already_wrote(tmp_path: Path) -> None:
    exits = tmp_path / "apps"
    exits.mkdir()
    (exits / "web").write_text(SHOW_STARTED)
    record, _ = _record(tmp_path, SERVICE_RESULT="success", EXIT_CODE="killed", EXIT_STATUS="TERM")
    assert record == SHOW_STARTED


def test_the_longest_app_name_still_names_every_lifecycle_unit() -> None:
    from kvmpod.pod.limits import MAX_APP_NAME_BYTES, NAME_MAX

    name = "a" * MAX_APP_NAME_BYTES
    paths = [o.path for o in lifecycle.plan_lifecycle([name], "kvmpod_pod", "/etc/kvmpod/pod.json", None)]
    assert max(len(part.encode()) for p in paths for part in p.split("/")) <= NAME_MAX


# ---------------------------------------------------------------- waiting for journald to pass the app's output on

def _drain_run(tmp_path: Path, script: str, streams: Path, tenths: int = lifecycle.DRAIN_TENTHS,
               remove_after: float | None = None) -> tuple[float, bool]:
    """Run `script` for app `web` with journald's stream files in `streams`; (seconds taken, whether
    the record existed while the stream file was still there)."""
    import threading
    import time

    exits = tmp_path / "apps"
    exits.mkdir(exist_ok=True)
    script = (script.replace(lifecycle.STREAMS_DIR, str(streams)).replace(lifecycle.EXITS_DIR, str(exits))
              .replace(f"-lt {lifecycle.DRAIN_TENTHS} ", f"-lt {tenths} "))
    seen: list[bool] = []

    def remove() -> None:
        time.sleep(remove_after)
        seen.append((exits / "web").exists())
        for f in streams.iterdir():
            f.unlink()

    remover = threading.Thread(target=remove) if remove_after is not None else None
    env = {**os.environ, "MONITOR_SERVICE_RESULT": "success", "MONITOR_EXIT_CODE": "exited", "MONITOR_EXIT_STATUS": "0"}
    started = time.monotonic()
    if remover:
        remover.start()
    subprocess.run(["/bin/sh", "-c", script, "kvmpod-record", "web"], check=True, env=env, timeout=60)
    took = time.monotonic() - started
    if remover:
        remover.join()
    return took, bool(seen and seen[0])


def _stream(streams: Path, name: str, unit: str) -> None:
    streams.mkdir(exist_ok=True)
    (streams / name).write_text(f"# This is private data. Do not parse\nPRIORITY=6\nLEVEL_PREFIX=1\n"
                                f"IDENTIFIER=web\nUNIT={unit}\nSTREAM_ID=0123\n")


def test_the_record_unit_ends_only_when_journald_has_read_the_apps_stream(tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    _stream(streams, "8:1234", "web.service")
    _stream(streams, "8:1235", "other.service")
    took, recorded_while_waiting = _drain_run(tmp_path, lifecycle.RECORD_SCRIPT, streams, remove_after=1.0)
    assert took >= 1.0
    assert recorded_while_waiting  # the exit time is taken before the wait, not after it


def test_another_units_stream_is_not_waited_for(tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    _stream(streams, "8:1235", "other.service")
    _stream(streams, "8:1236", "web.service.d")  # a name that only begins with the app's unit's
    took, _ = _drain_run(tmp_path, lifecycle.RECORD_SCRIPT, streams)
    assert took < 2.0  # no wait at all: 45 s if it waited (the bound)
    assert (tmp_path / "apps/web").exists()


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    _stream(streams, "8:1234", "web.service")
    took, _ = _drain_run(tmp_path, lifecycle.RECORD_SCRIPT, streams, tenths=3)
    assert took < 10.0 and (tmp_path / "apps/web").exists()


def test_the_reaper_waits_for_the_stream_too(tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    _stream(streams, "8:1234", "web.service")
    exits = tmp_path / "apps"
    exits.mkdir()
    (exits / "web").write_text(SHOW_STARTED)  # recorded already: the reaper only waits
    took, _ = _drain_run(tmp_path, lifecycle.REAPER_SCRIPT, streams, remove_after=1.0)
    assert took >= 1.0


def test_a_failed_app_is_recorded_with_its_exact_times_a_successful_one_without_systemctl() -> None:
    outputs = {o.path: o.content for o in lifecycle.plan_lifecycle(["web"], "kvmpod_pod", "/etc/kvmpod/pod.json", None)}
    assert f"{lifecycle.SYSTEMCTL} show" in outputs["kvmpod-failed-web.service"]
    assert "ExecMainExitTimestampMonotonic" in outputs["kvmpod-failed-web.service"]
    assert lifecycle.SYSTEMCTL not in outputs["kvmpod-ended-web.service"]
