"""An app's isolators as [Service] settings (pure): rkt 1.30's appSystemdUnit, on systemd 252.

The cgroup settings are cgroup v2's (the guest runs the unified hierarchy): MemoryMax= rather than
rkt's MemoryLimit=, CPUWeight= rather than CPUShares= (converted as systemd itself converts them).
"""

from ..pod.model import AppIsolators


def isolator_settings(isolators: AppIsolators, supplementary_gids: tuple[int, ...] = ()) -> list[tuple[str, str]]:
    settings: list[tuple[str, str]] = []
    if supplementary_gids:
        settings.append(("SupplementaryGroups", " ".join(str(g) for g in supplementary_gids)))
    if isolators.memory_max is not None:
        settings.append(("MemoryMax", str(isolators.memory_max)))
    if isolators.cpu_quota_percent is not None:
        settings.append(("CPUQuota", f"{isolators.cpu_quota_percent}%"))
    if isolators.cpu_weight is not None:
        settings.append(("CPUWeight", str(isolators.cpu_weight)))
    if isolators.oom_score_adjust is not None:
        settings.append(("OOMScoreAdjust", str(isolators.oom_score_adjust)))
    # An empty assignment is the empty bounding set: a retain set cannot be empty, a remove set of
    # the whole default set can.
    settings.append(("CapabilityBoundingSet", " ".join(isolators.capabilities)))
    settings.append(("NoNewPrivileges", "yes" if isolators.no_new_privileges else "no"))
    if isolators.seccomp_mode != "off" and isolators.seccomp_set:
        prefix = "~" if isolators.seccomp_mode == "deny" else ""
        settings.append(("SystemCallFilter", prefix + " ".join(isolators.seccomp_set)))
        if isolators.seccomp_errno:
            settings.append(("SystemCallErrorNumber", isolators.seccomp_errno))
    return settings
