"""The pod's life in the guest, as rkt 1.30's stage1 ran it (stage1/init/common/units.go, reaper.sh).

Turned on by the host (`kvmpod run`) with `kvmpod.pod_share=TAG` on the kernel command line: TAG is
a 9p share of the pod directory, kvmpod's own, mounted at /run/kvmpod/pod. Then, for every app:

- `<app>.service` gets a drop-in: `Wants=`/`After=` its reaper, `OnFailure=poweroff.target` (an app
  that fails shuts the pod down, rkt's `OnFailure=halt.target`), and its stdout/stderr go to the
  journal and the console under its own name (`SyslogIdentifier=<app>`, `journal+console`; the
  stage1 points journald's TTYPath at the serial port the host reads the apps' output from);
- `kvmpod-reaper-<app>.service` (rkt's `reaper-<app>.service`): started before the app, stopped when
  the app is gone (`StopWhenUnneeded=`), and its `ExecStop=` writes the app's end, as systemd saw it
  (`systemctl show`: Result, ExecMainCode, ExecMainStatus, start and exit times), to
  /run/kvmpod/pod/apps/<app>, where the host reads it after the VM is gone. An app that never
  started (a volume missing) is recorded so, and powers the pod off too: it failed;
- `kvmpod-pod-end.service` (rkt's `shutdown.service`): wanted by every reaper and also
  `StopWhenUnneeded=`, so it stops when the last reaper has stopped, i.e. when every app has exited,
  and its `ExecStop=` powers the VM off.

A pod stopped from outside (`kvmpod stop`, Ctrl-C: ACPI power button, logind) stops its apps with
SIGTERM in the usual shutdown; each reaper still records its app on the way down.
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
DROPIN_NAME = "60-kvmpod-lifecycle.conf"
SYSTEMCTL = "/bin/systemctl"
# What the host reads back (kvmpod.host.pods.pod_dirs.read_exit).
SHOWN = ("Result", "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestampMonotonic",
         "ExecMainExitTimestampMonotonic")
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

# $1: the app. Written under a temporary name and renamed, so the host never reads half a record.
# One systemctl (each one is seconds under TCG, read over 9p): the start time comes from its output.
REAPER_SCRIPT = (
    'app=$1; d=' + EXITS_DIR + '; r=$(' + SYSTEMCTL + ' show ' + " ".join(f"-p {p}" for p in SHOWN)
    + ' "$app.service"); printf "%s\\n" "$r" > "$d/.$app.tmp" && mv -f "$d/.$app.tmp" "$d/$app"; '
    # never started (a dependency failed; the time is 0 or missing): the app failed; end the pod as
    # OnFailure= would have
    + 'case $r in *ExecMainStartTimestampMonotonic=[1-9]*) ;; *) ' + SYSTEMCTL + ' --no-block poweroff;; esac; '
    + 'exit 0'
)


def reaper_unit(app_name: str) -> str:
    return f"kvmpod-reaper-{app_name}.service"


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
    """The pod share's mount, the end-of-pod unit, and each app's reaper and drop-in (pure)."""
    share_mount = mount_unit_name(POD_SHARE_DIR)

    def unit(description: str, *entries: tuple[str, str]) -> list[tuple[str, str]]:
        return [("Description", description), ("Documentation", DOCUMENTATION), ("SourcePath", manifest_path),
                *entries]

    outputs: list[Output] = [
        GeneratedFile(share_mount, render_unit([
            ("Unit", unit("kvmpod pod share: where the apps' exit statuses reach the host")),
            ("Mount", [("What", tag), ("Where", POD_SHARE_DIR), ("Type", "9p"),
                       ("Options", ninep_mount_options(ninep_options, read_only=False))]),
        ])),
        GeneratedFile(POD_END_UNIT, render_unit([
            ("Unit", unit("kvmpod: power the pod off when its last app has exited",
                          *POD_UNIT_DEPENDENCIES, ("StopWhenUnneeded", "yes"))),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"), ("ExecStart", "/bin/true"),
                         # Not --force (tried, issue 20): systemd-shutdown's SIGTERM can then reach
                         # journald before it has read the apps' last lines (an e2e run under load
                         # missed one: the likely cause). Not SuccessAction=poweroff either (tried,
                         # issue 20: 0.4 s quicker, but e2e test_load's alpha lost its last line in
                         # three runs of three, with or without a journalctl --sync first).
                         # "-": during a shutdown already under way the request is refused; fine.
                         ("ExecStop", f"-{SYSTEMCTL} --no-block poweroff")]),
        ])),
    ]
    for name in app_names:
        reaper = reaper_unit(name)
        sections: list[Section] = [
            # Before= the app, as the app's drop-in's After= already orders them, but said here: a
            # dependency is a reference from the unit that declares it, so the app's unit is not
            # garbage-collected between its stop and the ExecStop= that reads it. Without it a boot saw
            # "app.service: Collecting." at once, and `systemctl show` then loaded the unit afresh and
            # recorded an app that had run 10 s as never started (ExecMainStartTimestampMonotonic=0).
            ("Unit", unit(f"kvmpod: record how app {name} ended", *POD_UNIT_DEPENDENCIES,
                          ("StopWhenUnneeded", "yes"), ("Wants", POD_END_UNIT), ("After", POD_END_UNIT),
                          ("Before", app_service(name)), ("RequiresMountsFor", POD_SHARE_DIR))),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"), ("ExecStart", "/bin/true"),
                         ("ExecStop", " ".join(exec_word(w) for w in ("/bin/sh", "-c", REAPER_SCRIPT,
                                                                       "kvmpod-reaper", name)))]),
        ]
        outputs.append(GeneratedFile(reaper, render_unit(sections)))
        outputs.append(GeneratedFile(f"{app_service(name)}.d/{DROPIN_NAME}", render_unit([
            ("Unit", [("Wants", reaper), ("After", reaper), ("OnFailure", "poweroff.target")]),
            ("Service", [("SyslogIdentifier", name), ("StandardOutput", "journal+console"),
                         ("StandardError", "journal+console")]),
        ], comment="kvmpod run's pod lifecycle (kvmpod.pod_share= on the kernel command line)")))
    return outputs
