"""The pod's life in the guest, as rkt 1.30's stage1 ran it (stage1/init/common/units.go, reaper.sh).

Turned on by the host (`kvmpod run`) with `kvmpod.pod_share=TAG` on the kernel command line: TAG is
a 9p share of the pod directory, kvmpod's own, mounted at /run/kvmpod/pod. Then, for every app:

- `<app>.service` gets a drop-in: `Wants=`/`After=` its reaper, `OnFailure=poweroff.target` (an app
  that fails shuts the pod down, rkt's `OnFailure=halt.target`), and its stdout/stderr go to the
  journal and the console under its own name (`SyslogIdentifier=<app>`, `journal+console`; the
  stage1 points journald's TTYPath at the serial port the host reads the apps' output from);
- `kvmpod-ended-<app>.service` or `kvmpod-failed-<app>.service`, started by the app's
  `OnSuccess=`/`OnFailure=` as soon as its unit is inactive or failed, writes its end to
  /run/kvmpod/pod/apps/<app>, where the host reads it after the VM is gone: an app that succeeded as
  systemd gives it to such a unit ($MONITOR_SERVICE_RESULT, $MONITOR_EXIT_CODE, $MONITOR_EXIT_STATUS;
  the exit time from the guest's uptime; issue 20: no `systemctl` on the pod's end, which took 0.3-1.7
  s under TCG), a failed one with the exact times of `systemctl show` (the pod's status is its first
  failure by exit time);
- `kvmpod-reaper-<app>.service` (rkt's `reaper-<app>.service`): started before the app, stopped when
  the app and its record unit are gone (`StopWhenUnneeded=`); its `ExecStop=` is the fallback for an
  app with no record yet (it never started: a volume missing, a pre-start handler failed; or the
  shutdown stopped the reaper before the record unit ran): it writes the end `systemctl show` reads
  (Result, ExecMainCode, ExecMainStatus, start and exit times). An app that never started powers the
  pod off too: it failed;
- `kvmpod-pod-end.service` (rkt's `shutdown.service`): wanted by every app, kept up by each record
  unit while it records (`Requisite=`) and `StopWhenUnneeded=`, so it stops when every app has ended
  and been recorded (not wanted by the reapers: the pod's end waits for no reaper's stop). Its
  `OnSuccess=` starts `kvmpod-pod-done.target`, whose `SuccessAction=poweroff-immediate` has PID 1
  sync the file systems and power the VM off at once (issue 20; rkt's shutdown.service forced its
  end too, `systemctl --force exit`, and Kata's agent unit `sync; systemctl --force poweroff`). Not
  in a shutdown already under way: that start is refused there, and the orderly shutdown records
  the apps it stops. A kept pod (`kvmpod run --keep`) ends with the orderly
  shutdown (host/pods/kept_journal.py).

A pod stopped from outside (`kvmpod stop`, Ctrl-C: Ctrl-Alt-Del, host/hypervisor/guest_stop.py)
stops its apps with SIGTERM in the usual shutdown; each app's record unit (or its reaper) still
records it on the way down.
"""

from ..pod.problems import InvalidInput, Problem
from .app_services import app_service, exec_word
from .mount_units import ninep_mount_options
from .unitfile import DOCUMENTATION, POD_UNIT_DEPENDENCIES, GeneratedFile, Output, Section, render_unit
from .unitname import mount_unit_name

POD_SHARE_SETTING = "pod_share"  # kvmpod.pod_share=TAG on the kernel command line
POD_SHARE_DIR = "/run/kvmpod/pod"
EXITS_DIR = POD_SHARE_DIR + "/apps"  # the host creates it in the share: <pod dir>/share/apps
POD_END_UNIT = "kvmpod-pod-end.service"
POD_DONE_UNIT = "kvmpod-pod-done.target"
POD_DONE_ACTION = "poweroff-immediate"
# The stage1's holder of the apps' output port (host/images/apps_port.py): stopped before the pod is done,
# its close of the port the last one, which waits until the port has sent all the apps' lines.
APPS_PORT_UNIT = "kvmpod-apps-port.service"
ORDERLY_END_DROPIN = "50-kvmpod-orderly-end.conf"  # a kept pod's: host/pods/kept_journal.py
DROPIN_NAME = "60-kvmpod-lifecycle.conf"
SYSTEMCTL = "/bin/systemctl"
# What the host reads back (kvmpod.host.pods.pod_dirs.read_exit).
SHOWN = ("Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestampMonotonic",
         "ExecMainExitTimestampMonotonic")
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

# What systemd gives a unit its app's OnSuccess=/OnFailure= started (systemd.exec(5), since 251):
# $MONITOR_SERVICE_RESULT, $MONITOR_EXIT_CODE, $MONITOR_EXIT_STATUS, the values ExecStopPost= gets.
# $MONITOR_EXIT_STATUS is a signal's name ("TERM") when the code is killed or dumped, in the kernel's
# numbering (x86 and most others; RTMIN+n is 34+n); the record keeps waitid()'s numbers, as
# `systemctl show` writes them.
SIGNAL_NAMES = ("HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
                "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
                "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS")
MONITOR_VARIABLES = ("MONITOR_SERVICE_RESULT", "MONITOR_EXIT_CODE", "MONITOR_EXIT_STATUS")

# kvmpod-ended-<app>.service's ExecStart= (issue 20; kvmpod-failed-<app> runs REAPER_SCRIPT for exact
# times, see plan_lifecycle): the app's end, recorded as soon as its unit is
# inactive or failed, without a systemctl (an exec read over 9p, 0.3-1.7 s under TCG on every pod's
# end). $1: the app. Not the app's own ExecStopPost=: even with "+" that runs in the app's
# RootDirectory (systemd 252: no /proc, no pod share there). Nothing is written when the main process
# never ran (no $MONITOR_EXIT_CODE: a pre-start handler failed) or the status is not one systemd
# writes: the reaper records those. The exit time is the guest's uptime (/proc/uptime:
# CLOCK_BOOTTIME, which a VM never suspends, in 10 ms steps) when the record is written, right after
# the app's unit stopped (after its post-stop handlers, if it has any). No start time: systemd gives
# none here; that the main process ran is in ExecMainCode (1-3).
# Both scripts write a record with one printf: one write(2) of under 300 bytes, which reaches the
# host in one 9p write, so a record is whole, or empty when the VM was killed between the file's
# creation and that write (the host reads an empty record as none: host/pods/pod_dirs.py). Not under
# a temporary name renamed with /bin/mv: that exec took 0.5 s under TCG on every pod's end (issue 20,
# measured in a boot), and nothing in the guest reads a record while it is written (the record unit
# and the reaper of an app never run at once: the reaper's stop is ordered before the record unit's
# start, and the record unit's stop before the reaper's).
# Both scripts end (a shell EXIT trap, whichever way they exit) by waiting until journald has passed
# on all of the app's output: its stdout stream to journald is closed when the app's processes are gone,
# but the lines still queued in that socket (up to ~200 KiB, ~7,000 short lines, at ~500 lines/s to the
# host under TCG) are read afterwards, and a poweroff before then loses them (an e2e boot lost 6,848
# of an app's 12,000 lines: systemd-shutdown SIGKILLs journald 10 s after its SIGTERM). journald keeps
# a file per open stream in STREAMS_DIR with the unit's name (UNIT=, its state for a restart, systemd
# 252's journald-stream.c) and removes it when the stream is done: after the last line at its end of
# file. The record unit holds the pod's end (and a shutdown: Before=shutdown.target) until then; read
# with the shell's own `read` (no exec unless there is something to wait for), bounded by
# DRAIN_TENTHS tenths of a second (within the units' 90 s start and stop timeouts).
STREAMS_DIR = "/run/systemd/journal/streams"
DRAIN_TENTHS = 450
DRAIN = (
    'drain() { i=0; while [ $i -lt ' + str(DRAIN_TENTHS) + ' ]; do b=; for f in ' + STREAMS_DIR + '/*; do '
    '[ -f "$f" ] && { while IFS= read -r l; do [ "$l" = "UNIT=$app.service" ] && b=1; done < "$f"; } 2>/dev/null; '
    'done; [ -z "$b" ] && return 0; i=$((i+1)); sleep 0.1; done; }; trap drain EXIT; '
)
RECORD_SCRIPT = (
    'app=$1; ' + DRAIN + 'd=' + EXITS_DIR + '; s=$MONITOR_EXIT_STATUS; [ -e "$d/$app" ] && exit 0; '
    'case $MONITOR_EXIT_CODE in exited) c=1;; killed) c=2;; dumped) c=3;; *) exit 0;; esac; '
    'case $c$s in 1*) ;; [23]RTMIN+[0-9]|[23]RTMIN+[0-9][0-9]) s=$((34+${s#RTMIN+}));; *) n=0; for x in '
    + " ".join(SIGNAL_NAMES) + '; do n=$((n+1)); if [ "$x" = "$s" ]; then s=$n; break; fi; done;; esac; '
    'case $s in [0-9]|[0-9][0-9]|[0-9][0-9][0-9]) ;; *) exit 0;; esac; '
    'read t x < /proc/uptime; '
    'printf "Result=%s\\nExecMainCode=%s\\nExecMainStatus=%s\\nExecMainExitTimestampMonotonic=%s\\n" '
    '"$MONITOR_SERVICE_RESULT" "$c" "$s" "${t%.*}${t#*.}0000" > "$d/$app"; exit 0'
)

# The reaper's ExecStop=, $1: the app. The record's fallback, when no record unit wrote one: the
# app never started (a dependency failed: its unit never changed state; a pre-start handler failed),
# or the shutdown stopped the reaper before the record unit ran (a stop is ordered before a start).
# It writes what `systemctl show` says (one systemctl: the start time is read from its output).
REAPER_SCRIPT = (
    'app=$1; ' + DRAIN + 'd=' + EXITS_DIR + '; [ -e "$d/$app" ] && exit 0; r=$(' + SYSTEMCTL + ' show '
    + " ".join(f"-p {p}" for p in SHOWN)
    + ' "$app.service"); printf "%s\\n" "$r" > "$d/$app"; '
    # never started (a dependency failed; the time is 0 or missing): the app failed; end the pod as
    # OnFailure= would have
    + 'case $r in *ExecMainStartTimestampMonotonic=[1-9]*) ;; *) ' + SYSTEMCTL + ' --no-block poweroff;; esac; '
    + 'exit 0'
)


def reaper_unit(app_name: str) -> str:
    return f"kvmpod-reaper-{app_name}.service"


def record_units(app_name: str) -> dict[str, str]:
    """The units the app's OnSuccess= and OnFailure= start to record its end. Two, not one: they run
    different scripts (RECORD_SCRIPT, REAPER_SCRIPT), and systemd 252
    passes no MONITOR_ variables to a unit its source triggers both ways ("multiple trigger source
    candidates for exit status propagation (hello.service, hello.service), skipping", seen in a boot)."""
    return {"OnSuccess": f"kvmpod-ended-{app_name}.service", "OnFailure": f"kvmpod-failed-{app_name}.service"}


def pod_share_tag(settings: dict[str, str]) -> str | None:
    """The pod share's 9p tag from the kernel command line settings; None: no lifecycle."""
    tag = settings.get(POD_SHARE_SETTING)
    if tag is None:
        return None
    if not tag or len(tag.encode()) > 31 or not _TAG_CHARS.issuperset(tag):
        raise InvalidInput([Problem(f"kvmpod.{POD_SHARE_SETTING}", f"{tag!r} is not a 9p tag kvmpod makes "
                                    "(1-31 letters, digits, '_', '-', '.'); boot the pod with kvmpod run")])
    return tag


def plan_lifecycle(app_names: list[str], tag: str, manifest_path: str, ninep_options: str | None) -> list[Output]:
    """The pod share's mount, the end-of-pod unit, and each app's reaper, record unit and drop-in (pure)."""
    share_mount = mount_unit_name(POD_SHARE_DIR)

    def unit(description: str, *entries: tuple[str, str]) -> list[tuple[str, str]]:
        return [("Description", description), ("Documentation", DOCUMENTATION), ("SourcePath", manifest_path),
                *entries]

    outputs: list[Output] = [
        GeneratedFile(share_mount, render_unit([
            # DefaultDependencies=no: not unmounted in the orderly shutdown, which ran /bin/umount (an
            # exec read over 9p, 0.4 s under TCG) on every pod's end (issue 20); systemd-shutdown
            # unmounts it after its last writer is gone. Its writes (cache=mmap) reach the host as
            # they are made.
            ("Unit", unit("kvmpod pod share: where the apps' exit statuses reach the host",
                          ("DefaultDependencies", "no"))),
            ("Mount", [("What", tag), ("Where", POD_SHARE_DIR), ("Type", "9p"),
                       ("Options", ninep_mount_options(ninep_options, read_only=False))]),
        ])),
        GeneratedFile(POD_END_UNIT, render_unit([
            # Stops when every app has ended and been recorded; then (OnSuccess=) the pod is done. In
            # a shutdown (an app failed: OnFailure=poweroff.target; kvmpod stop: Ctrl-Alt-Del)
            # this unit is stopped too (Conflicts=shutdown.target), and its OnSuccess= start, in job
            # mode "fail", is refused: it would stop shutdown.target, whose start is queued ("Transaction
            # is destructive"). That shutdown runs on, orderly, and records the apps it stops.
            ("Unit", unit("kvmpod: end the pod when its last app has exited",
                          *POD_UNIT_DEPENDENCIES, ("StopWhenUnneeded", "yes"),
                          ("OnSuccess", POD_DONE_UNIT), ("OnSuccessJobMode", "fail"))),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"), ("ExecStart", "/bin/true")]),
        ])),
        GeneratedFile(POD_DONE_UNIT, render_unit([
            # issue 20: a pod whose apps have all ended is done at once. PID 1 syncs every file system
            # (the volumes' and the pod's writes reach the host: 9p and virtio-fs write through to it
            # on sync) and powers the VM off (SuccessAction=poweroff-immediate: sync(), then
            # reboot(RB_POWER_OFF)), instead of the orderly shutdown, which stopped each unit, ran
            # systemd-shutdown (an exec over 9p), SIGTERMed and SIGKILLed what was left and unmounted
            # everything: 1-2 s under TCG, for a guest nothing outlives. What the pod's end needs
            # is done before this unit starts: every app's end recorded in the pod share, and its
            # output read by journald to its end (DRAIN) and written to the apps' port. This unit's
            # start stops the port's holder first (Conflicts= and After= APPS_PORT_UNIT; its shell
            # leaves on SIGTERM by itself): its close is then the port's last, which, with the CTS
            # flow control the stage1 sets (host/images/apps_port.py), waits until the UART has sent
            # what the tty still held of the apps' lines. A guest without that unit stops nothing.
            # A target, not a service: nothing to exec (a /bin/true took 0.1-1.3 s under TCG while
            # the boot's tail still ran). Nothing wants it, so PID 1 stops it as unneeded right after
            # its start, and the stop is its success. A kept pod (kvmpod run --keep) keeps the
            # orderly shutdown, so its persistent journal is closed cleanly with the shutdown in it
            # (host/pods/kept_journal.py).
            ("Unit", unit("kvmpod: power the pod off, its apps all ended and recorded",
                          *POD_UNIT_DEPENDENCIES, ("Conflicts", APPS_PORT_UNIT), ("After", APPS_PORT_UNIT),
                          ("StopWhenUnneeded", "yes"),
                          ("SuccessAction", POD_DONE_ACTION))),
        ])),
    ]
    for name in app_names:
        reaper = reaper_unit(name)
        sections: list[Section] = [
            # Not After= the pod's end (the app is): a reaper's stop would then come before the pod's end
            # stopped, and the poweroff would wait for it (seen in a boot).
            # Before= the app, as the app's drop-in's After= already orders them, but said here: a
            # dependency is a reference from the unit that declares it, so the app's unit is not
            # garbage-collected between its stop and the ExecStop= that reads it. Without it a boot saw
            # "app.service: Collecting." at once, and `systemctl show` then loaded the unit afresh and
            # recorded an app that had run 10 s as never started (ExecMainStartTimestampMonotonic=0).
            ("Unit", unit(f"kvmpod: record how app {name} ended", *POD_UNIT_DEPENDENCIES,
                          ("StopWhenUnneeded", "yes"),
                          ("Before", app_service(name)), ("RequiresMountsFor", POD_SHARE_DIR))),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"), ("ExecStart", "/bin/true"),
                         ("ExecStop", " ".join(exec_word(w) for w in ("/bin/sh", "-c", REAPER_SCRIPT,
                                                                       "kvmpod-reaper", name)))]),
        ]
        outputs.append(GeneratedFile(reaper, render_unit(sections)))
        for trigger, record in record_units(name).items():
            # A failed app's record gets the exact times (`systemctl show`, as the reaper writes it, and
            # its poweroff for an app that never started, which OnFailure= asks for anyway): the pod's
            # status is the first failure by exit time, and the uptime a record unit reads when it
            # writes is later than the exit by its start (0.15-0.5 s, more under load). A full CI run
            # had e2e run-fail's `fail`, whose failure began the shutdown, recorded at 12.13 s and
            # `handler`, which that shutdown's SIGTERM ended at 11.99 s (exact, by its reaper), so the
            # pod exited 143 instead of 3. The pod whose apps succeed keeps the record without a
            # systemctl (issue 20: its end's speed); a failing pod's end pays one.
            script = RECORD_SCRIPT if trigger == "OnSuccess" else REAPER_SCRIPT
            outputs.append(GeneratedFile(record, render_unit([
                # Requisite=: never starts the reaper or the pod's end, and keeps them from stopping
                # while this unit has a job or runs (StopWhenUnneeded= counts it), so the reaper's
                # fallback finds the record written and the pod powers off once it is. In a shutdown the reaper's stop comes first (a stop is ordered before a
                # start) and records the app itself; this unit then finds the record and writes none.
                # Before=shutdown.target: the shutdown waits for the record.
                ("Unit", unit(f"kvmpod: record how app {name} ended", ("DefaultDependencies", "no"),
                              ("Requisite", f"{reaper} {POD_END_UNIT}"), ("After", reaper), ("Before", "shutdown.target"),
                              ("RequiresMountsFor", POD_SHARE_DIR))),
                ("Service", [("Type", "oneshot"),
                             ("ExecStart", " ".join(exec_word(w) for w in ("/bin/sh", "-c", script,
                                                                            "kvmpod-record", name)))]),
            ])))
        outputs.append(GeneratedFile(f"{app_service(name)}.d/{DROPIN_NAME}", render_unit([
            ("Unit", [("Wants", f"{reaper} {POD_END_UNIT}"), ("After", f"{reaper} {POD_END_UNIT}"),
                      ("OnSuccess", record_units(name)["OnSuccess"]),
                      ("OnFailure", f"{record_units(name)['OnFailure']} poweroff.target")]),
            ("Service", [("SyslogIdentifier", name), ("StandardOutput", "journal+console"),
                         ("StandardError", "journal+console")]),
        ], comment="kvmpod run's pod lifecycle (kvmpod.pod_share= on the kernel command line)")))
    return outputs
