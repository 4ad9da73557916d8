"""The [Service] settings around an app's command: its environment and its isolators (edge: looks
at the app's rootfs for the files its image ships).
"""

import os
from _collections_abc import Callable

from ..pod.image_annotations import NOTIFY
from ..pod.isolators import read_isolators
from ..pod.mounts import ResolvedApp
from ..pod.problems import Problem
from .app_environment import NAME_SERVICE_FILES, environment_settings
from .app_isolators import isolator_settings
from .app_services import Identity
from .environment_helper import BUSYBOX, HELPER_IN_APP, is_static_executable, systemd_accepts


def app_settings(app: ResolvedApp, identity: Identity, root: str, has_networks: bool, annotations: dict[str, str],
                 problems: list[Problem], warn: Callable[[str], None],
                 override_name_service: bool = False) -> list[tuple[str, str]]:
    """Settings for `app`, whose guest tree is at `root`; bad isolators are added to `problems`."""
    section = app.section
    assert section is not None
    isolators, found, warnings = read_isolators(section.isolators, f"{app.section_field}.isolators", identity.uid)
    problems.extend(found)
    for warning in warnings:
        warn(f"app {app.name!r}: {warning}")
    settings = _environment_helper(app, root, problems)
    if annotations.get(NOTIFY) == "true":
        # rkt's supportsNotify: the app tells systemd it is ready over $NOTIFY_SOCKET, which must
        # exist inside its root (systemd sets the variable; the socket is bound in at its path).
        # NotifyAccess=all: an app is often a shell script whose child says READY=1; every process
        # of the app's own cgroup may, nothing outside it can.
        settings += [("Type", "notify"), ("NotifyAccess", "all"), ("BindPaths", "/run/systemd/notify")]
    shipped = frozenset() if override_name_service else \
        frozenset(p for p in NAME_SERVICE_FILES if os.path.lexists(root + app.rootfs + p))
    writable = tuple(m.target for m in app.mounts if not m.read_only)
    return (settings + environment_settings(app.rootfs, shipped, has_networks, app.read_only_rootfs, writable)
            + isolator_settings(isolators, section.supplementary_gids))


def _environment_helper(app: ResolvedApp, root: str, problems: list[Problem]) -> list[tuple[str, str]]:
    """The bind of the guest's static busybox when a variable needs it (environment_helper.py)."""
    assert app.section is not None
    unpassable = [k for k, e in enumerate(app.section.environment) if not systemd_accepts(e.name)]
    if not unpassable:
        return []
    field = f"{app.section_field}.environment[{unpassable[0]}].name"
    name = app.section.environment[unpassable[0]].name
    if not is_static_executable(root + BUSYBOX):
        problems.append(Problem(field, f"{name!r}: systemd cannot pass a name with '.' or '-', and the guest has no "
                                       f"static {BUSYBOX} to pass it; install busybox-static in the guest, or rename "
                                       "the variable"))
        return []
    if "=" in app.section.exec[0]:
        problems.append(Problem(f"{app.section_field}.exec[0]", f"{app.section.exec[0]!r}: a program path with '=' "
                                "cannot follow env, which variables with '.' or '-' need; rename it"))
        return []
    return [("BindReadOnlyPaths", f"{BUSYBOX}:{HELPER_IN_APP}")]
