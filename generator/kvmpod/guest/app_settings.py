"""The [Service] settings around an app's command: its environment and its isolators (edge: looks
at the app's rootfs for the files its image ships).
"""

import os
from collections.abc import Callable

from ..pod.isolators import read_isolators
from ..pod.mounts import ResolvedApp
from ..pod.problems import Problem
from .app_environment import NAME_SERVICE_FILES, environment_settings
from .app_isolators import isolator_settings
from .app_services import Identity


def app_settings(app: ResolvedApp, identity: Identity, root: str, has_networks: bool, problems: list[Problem],
                 warn: Callable[[str], None]) -> list[tuple[str, str]]:
    """Settings for `app`, whose guest tree is at `root`; bad isolators are added to `problems`."""
    section = app.section
    assert section is not None
    isolators, found, warnings = read_isolators(section.isolators, f"{app.section_field}.isolators", identity.uid)
    problems.extend(found)
    for warning in warnings:
        warn(f"app {app.name!r}: {warning}")
    shipped = frozenset(p for p in NAME_SERVICE_FILES if os.path.lexists(root + app.rootfs + p))
    writable = tuple(m.target for m in app.mounts if not m.read_only)
    return (environment_settings(shipped, has_networks, app.read_only_rootfs, writable)
            + isolator_settings(isolators, section.supplementary_gids))
