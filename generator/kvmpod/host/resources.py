"""CPUs and memory for the VM from the apps' resource isolators, as rkt 1.30 computed them.

rkt (stage1/init/kvm/resources.go): the sum of the apps' `resource/memory` limits plus 128 MiB
for the guest system, at least 512 MiB (kvmpod's floor: a systemd guest on 9p needs it); the sum
of the apps' `resource/cpu` limits, each rounded up, or every host CPU when no app says or the
sum is larger. Pod-level isolators are not counted, as in rkt.
"""

import os
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from ..pod.model import AppSection, Isolator, Pod
from ..pod.problems import InvalidInput, Problem

SYSTEM_MEMORY_OVERHEAD_MIB = 128
MIN_MEMORY_MIB = 512
MIB = 1024 * 1024

# Kubernetes resource.Quantity suffixes, which appc uses.
_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "m": Decimal("0.001"), "": 1,
}


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_mib: int


def parse_quantity(value: object) -> Decimal:
    """"1G", "512Mi", "500m", "2", 2 as a Decimal; ValueError when it is none of those."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, scale = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, scale = text, 1
    if not number or not all(c in "0123456789." for c in number):
        raise ValueError
    try:
        quantity = Decimal(number) * scale
    except InvalidOperation:
        raise ValueError from None
    if quantity < 0:
        raise ValueError
    return quantity


def _limit(isolator: Isolator, field: str, problems: list[Problem]) -> Decimal | None:
    value = isolator.value
    if not isinstance(value, dict) or "limit" not in value:
        return None  # only a request: rkt sized the VM by limits alone
    try:
        return parse_quantity(value["limit"])
    except ValueError:
        problems.append(Problem(f"{field}.value.limit", f"{value['limit']!r} is not a quantity; "
                                                        f"write it like \"512Mi\", \"1G\" or \"500m\""))
        return None


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
                    total_memory += int(limit) // MIB
            elif isolator.name == "resource/cpu":
                limit = _limit(isolator, field, problems)
                if limit is not None:
                    cpus_given = True
                    total_cpus += int(limit.to_integral_value(rounding=ROUND_CEILING))
    if problems:
        raise InvalidInput(problems)
    if not cpus_given or total_cpus > host_cpus or total_cpus < 1:
        total_cpus = host_cpus
    return Resources(cpus=total_cpus, memory_mib=max(total_memory + SYSTEM_MEMORY_OVERHEAD_MIB, MIN_MEMORY_MIB))
