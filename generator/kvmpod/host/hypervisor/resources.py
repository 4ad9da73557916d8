"""CPUs and memory for the VM from the apps' resource isolators, as rkt 1.30 computed them.

rkt (stage1/init/kvm/resources.go): the sum of the apps' `resource/memory` limits plus 128 MiB
for the guest system, at least 256 MiB (kvmpod's floor, measured, issue 20: the stage1's systemd,
journald, udevd, logind and dbus use 42-52 MiB (MemTotal - MemAvailable) while a pod's app runs, so
256 MiB leaves an app without a memory limit about 200 MiB and the guest's page cache the rest;
512 MiB, the guessed floor before, left most of it unused and cost the host up to 680 MiB of QEMU's
resident memory per pod under TCG); the sum
of the apps' `resource/cpu` limits, each rounded up, or every host CPU when no app says or the
sum is larger. Pod-level isolators are not counted, as in rkt.
"""

import os
from dataclasses import dataclass

from ...pod.model import AppSection, Isolator, Pod
from ...pod.isolators import resource_limit
from ...pod.problems import InvalidInput, Problem
from ...pod.quantity import Quantity, parse_quantity  # noqa: F401  (also this module's API)

SYSTEM_MEMORY_OVERHEAD_MIB = 128
MIN_MEMORY_MIB = 256
MIB = 1024 * 1024


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_mib: int


def _limit(isolator: Isolator, field: str, problems: list[Problem]) -> Quantity | None:
    # Checked as the guest checks it (request, limit, default), so every host command refuses alike.
    return resource_limit(isolator.value, field, problems)


def app_resources(pod: Pod, sections: dict[str, AppSection | None], host_cpus: int | None = None) -> Resources:
    """`sections` maps each app to its effective app section (the pod's, else the image's)."""
    host_cpus = host_cpus or os.cpu_count() or 1
    problems: list[Problem] = []
    total_cpus = 0
    cpus_given = False
    total_memory = 0
    for i, app in enumerate(pod.apps):
        section = app.app if app.app is not None else sections.get(app.name)
        if section is None:
            continue
        base = f"apps[{i}].app.isolators" if app.app is not None else f"apps[{i}] image app.isolators"
        for k, isolator in enumerate(section.isolators):
            field = f"{base}[{k}]"
            if isolator.name == "resource/memory":
                limit = _limit(isolator, field, problems)
                if limit is not None:
                    total_memory += limit.floor() // MIB
            elif isolator.name == "resource/cpu":
                limit = _limit(isolator, field, problems)
                if limit is not None:
                    cpus_given = True
                    total_cpus += limit.ceil()
    if problems:
        raise InvalidInput(problems)
    if not cpus_given or total_cpus > host_cpus or total_cpus < 1:
        total_cpus = host_cpus
    return Resources(cpus=total_cpus, memory_mib=max(total_memory + SYSTEM_MEMORY_OVERHEAD_MIB, MIN_MEMORY_MIB))
