"""The app's own service, for apps the guest has no unit for (pure).

rkt ran each app as `<app>.service` chrooted into its rootfs; kvmpod does the same when the guest
does not already ship a unit of that name.
"""

from ..pod.frozen import frozen

from ..pod.mounts import ResolvedApp
from .environment_helper import HELPER_IN_APP, systemd_accepts
from .unitfile import (DOCUMENTATION, POD_UNIT_DEPENDENCIES, GeneratedFile, Output, Section, quote_word,
                       render_unit, requires_link, wants_link)

# Characters that need no quoting in ExecStart= (systemd.service(5), "Command lines").
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._:=,@+-")


@frozen
class Identity:
    """User= and Group= as numbers: names were looked up in the app's own rootfs by the edge."""

    uid: int
    gid: int


def exec_word(word: str, *, program: bool = False) -> str:
    """One argv word as ExecStart= reads it back: quoted and C-escaped when needed, `$` doubled
    in arguments (systemd expands $VAR there, never in the program's path: rkt's quoteExec).

    (`%` is doubled by render_unit, which runs before systemd's own specifier pass is undone.)
    """
    if not program:
        word = word.replace("$", "$$")  # ExecStart= expands $VAR at run time
    if word and _PLAIN.issuperset(word):
        return word
    if word == ";":
        return "\\;"  # a lone ";" separates commands
    return quote_word(word)


def exec_command(argv: tuple[str, ...] | list[str]) -> str:
    """A whole command line for ExecStart=, ExecStartPre=, ExecStopPost=."""
    return " ".join([exec_word(argv[0], program=True), *(exec_word(w) for w in argv[1:])])


def _exec_start(program: str, section) -> str:
    """ExecStart=; through the env helper when a variable's name is one systemd would drop."""
    argv = [program, *section.exec[1:]]
    passed = [f"{e.name}={e.value}" for e in section.environment if not systemd_accepts(e.name)]
    if not passed:
        return exec_command(argv)
    # "@": argv[0] is "env", the applet busybox runs; the program is env's argument now.
    return " ".join([f"@{HELPER_IN_APP}", "env", *(exec_word(w) for w in passed + argv)])


def environment_assignment(name: str, value: str) -> str:
    return quote_word(f"{name}={value}")


IDS_UNIT = "kvmpod-app-ids.service"


def app_service(app_name: str) -> str:
    """The unit that runs an app: rkt's name, which a guest may also ship itself."""
    return f"{app_name}.service"
SYSUSERS = "/bin/systemd-sysusers"


def plan_app_ids(identities: dict[str, Identity], guest_uids: set[int], guest_gids: set[int],
                 manifest_path: str, supplementary: dict[str, tuple[int, ...]] | None = None) -> list[Output]:
    """A oneshot giving the guest user-database entries for app ids it lacks, required by those apps.

    systemd (252) looks User=/Group= and every SupplementaryGroups= gid up in the guest's database
    before it enters the app's RootDirectory and refuses an id it cannot find, even a numeric one
    (216/GROUP); appc apps name ids of their own image. systemd-sysusers adds the entries
    idempotently (kvmpod-uid-N, kvmpod-gid-N). `supplementary`: each app's supplementaryGIDs.
    """
    supplementary = supplementary or {}
    gids_of = {app: {i.gid, *supplementary.get(app, ())} for app, i in identities.items()}
    lines: list[str] = [f"g kvmpod-gid-{gid} {gid}" for gid in sorted(set().union(*gids_of.values()) - guest_gids)]
    primary_gid: dict[int, int] = {}
    for identity in identities.values():
        if identity.uid not in guest_uids:
            primary_gid.setdefault(identity.uid, identity.gid)
    lines += [f"u kvmpod-uid-{uid} {uid}:{gid} - - -" for uid, gid in sorted(primary_gid.items())]
    apps = sorted(app for app, i in identities.items() if i.uid not in guest_uids or gids_of[app] - guest_gids)
    if not apps:
        return []
    sections: list[Section] = [
        ("Unit", [("Description", "kvmpod user and group entries for the apps' ids"),
                  ("Documentation", DOCUMENTATION), ("SourcePath", manifest_path),
                  *POD_UNIT_DEPENDENCIES, ("After", "systemd-sysusers.service"),
                  ("Before", " ".join(app_service(app) for app in apps))]),
        ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"),
                     ("ExecStart", " ".join([SYSUSERS, "--inline", *(exec_word(line) for line in lines)]))]),
    ]
    return [GeneratedFile(IDS_UNIT, render_unit(sections))] + [requires_link(app_service(app), IDS_UNIT) for app in apps]


def plan_app_service(app: ResolvedApp, identity: Identity, manifest_path: str,
                     settings: list[tuple[str, str]] = (), program: str | None = None) -> list[Output]:
    """The app's unit; `settings` are its environment's and isolators' [Service] settings
    (app_environment.py, app_isolators.py); `program` is exec[0] as found in the app's rootfs."""
    section = app.section
    assert section is not None and section.exec, "the edge only asks for apps with a command"
    service: list[tuple[str, str]] = [
        ("Type", "simple"),
        ("RootDirectory", app.rootfs),
        ("ExecStart", _exec_start(program or section.exec[0], section)),
        ("User", str(identity.uid)),
        ("Group", str(identity.gid)),
        ("WorkingDirectory", section.working_directory or "/"),
        # rkt gave every app its name; appc says AC_APP_NAME is always set.
        ("Environment", environment_assignment("AC_APP_NAME", app.name)),
    ]
    service += [("Environment", environment_assignment(e.name, e.value)) for e in section.environment
                if systemd_accepts(e.name)]
    # rkt's default output: the journal, tagged with the app's name, and the console.
    service += [("SyslogIdentifier", app.name), ("StandardOutput", "journal+console"),
                ("StandardError", "journal+console")]
    if any(key == "Type" for key, _ in settings):
        service = [(key, value) for key, value in service if key != "Type"]  # e.g. Type=notify
    service += settings
    # appc's event handlers run in the app's root, as the app's user (rkt: ExecStartPre=/ExecStopPost=).
    service += [("ExecStartPre" if h.name == "pre-start" else "ExecStopPost", exec_command(h.exec))
                for h in section.event_handlers]
    sections: list[Section] = [
        ("Unit", [("Description", f"kvmpod app {app.name}"), ("Documentation", DOCUMENTATION),
                  ("SourcePath", manifest_path),
                  *POD_UNIT_DEPENDENCIES,
                  # The NIC units (if any) are Before=network.target: apps find their network up.
                  ("After", "network.target")]),
        ("Service", service),
        ("Install", [("WantedBy", "multi-user.target")]),
    ]
    unit = app_service(app.name)
    # Requires= and After= its mounts come from the .requires/ links and each mount's Before=,
    # the same mechanism as for a unit the guest ships itself.
    return [GeneratedFile(unit, render_unit(sections)), wants_link("multi-user.target", unit)]
