"""`kvmpod status`, in the guest: the state of every unit kvmpod made or wired, over systemd's D-Bus.

Which units: those the generator wrote at this boot, read back from its output directory (not
planned again: the guest changes after the generator ran, e.g. the app ids it added), plus each
app's service. Their states come from systemd through pystemd (an optional dependency: only this
command needs it, and only in the guest).
"""

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .unitfile import HEADER, GeneratedFile, GeneratedLink, Output

GENERATOR_DIR = "/run/systemd/generator"  # systemd.generator(7): the normal output directory


@dataclass(frozen=True)
class PodUnit:
    name: str
    kind: str  # "volume" (9p mount or empty-volume service), "setup", "mount" (bind into an app), "app"


@dataclass(frozen=True)
class UnitState:
    name: str
    kind: str
    load_state: str  # "loaded", "not-found", …
    active_state: str  # "active", "inactive", "failed", …
    sub_state: str
    result: str  # the service's or mount's Result ("success", "exit-code", …); "" when not known
    reason: str  # why it is not running, in a few words; "" when nothing is wrong


@dataclass(frozen=True)
class RawState:
    """What systemd reports for one unit."""

    load_state: str
    active_state: str
    sub_state: str
    result: str
    requires: tuple[str, ...]


ReadState = Callable[[str], RawState]


def pod_units(outputs: list[Output]) -> list[PodUnit]:
    """The units in the generator's plan, in order: volumes, bind mounts, apps."""
    units: dict[str, str] = {}
    for output in outputs:
        top = output.path.split("/")[0]
        if "/" in output.path:
            if top.endswith(".service.requires"):
                units[top.removesuffix(".requires")] = "app"
            continue
        if isinstance(output, GeneratedFile):
            if top.startswith("mnt-") or top.startswith("kvmpod-empty-volume-"):
                units[top] = "volume"
            elif top.startswith("kvmpod-") and top.endswith(".service"):
                units[top] = "setup"  # e.g. kvmpod-app-ids.service
            elif top.endswith(".mount"):
                units[top] = "mount"
            elif top.endswith(".service"):
                units[top] = "app"
    order = {"volume": 0, "setup": 1, "mount": 2, "app": 3}
    return [PodUnit(name, kind) for name, kind in sorted(units.items(), key=lambda i: (order[i[1]], i[0]))]


def read_generated(directory: str) -> list[Output]:
    """kvmpod-generator's files in `directory` (by their header), and the app services' `.requires`
    links to them; other generators' files there are not ours to report."""
    ours: list[Output] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text.startswith(HEADER):
                ours.append(GeneratedFile(name, text))
    mine = {o.path for o in ours}
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".service.requires") and os.path.isdir(path):
            ours += [GeneratedLink(f"{name}/{link}", os.readlink(os.path.join(path, link)))
                     for link in sorted(os.listdir(path)) if link in mine]
    return ours


def unit_states(units: list[PodUnit], read: ReadState) -> list[UnitState]:
    raw = {u.name: read(u.name) for u in units}
    states = []
    for unit in units:
        r = raw[unit.name]
        states.append(UnitState(unit.name, unit.kind, r.load_state, r.active_state, r.sub_state, r.result,
                                _reason(r, read, raw)))
    return states


def _reason(r: RawState, read: ReadState, known: dict[str, RawState]) -> str:
    if r.load_state != "loaded":
        return f"unit {r.load_state}"
    if r.active_state == "failed":
        return f"failed: {r.result or 'unknown result'}"
    if r.active_state == "inactive":
        failed = _failed_requirements(r, read, known)
        if failed:
            return "not started: required " + ", ".join(failed) + " failed"
    return ""


def _failed_requirements(r: RawState, read: ReadState, known: dict[str, RawState]) -> list[str]:
    """The failed units this one requires, directly or through units that never started: the cause."""
    failed: list[str] = []
    seen: set[str] = set()
    pending = list(r.requires)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        dep = known.get(name) or known.setdefault(name, read(name))
        if dep.active_state == "failed":
            failed.append(name)
        elif dep.active_state == "inactive":
            pending.extend(dep.requires)
    return sorted(failed)


def render_table(states: list[UnitState]) -> str:
    rows = [("UNIT", "KIND", "STATE", "REASON")]
    rows += [(s.name, s.kind, f"{s.active_state} ({s.sub_state})", s.reason or "-") for s in states]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}\n" for r in rows)


def render_json(states: list[UnitState]) -> str:
    return json.dumps([asdict(s) for s in states], indent=2) + "\n"


def all_well(states: list[UnitState]) -> bool:
    return not any(s.reason for s in states)


def read_state_over_dbus(name: str) -> RawState:
    """One unit's state from systemd (pystemd; imported here so nothing else pays for it)."""
    try:
        from pystemd.systemd1 import Unit
    except ImportError:
        raise RuntimeError("kvmpod status needs pystemd: install python3-pystemd (apt) or kvmpod[systemd] "
                           "(pip)") from None
    try:
        return _read_unit(Unit, name)
    except Exception as error:  # pystemd's bus errors have no common base worth naming
        raise RuntimeError(f"cannot ask systemd about {name} over D-Bus: {error}") from None


def _read_unit(unit_class, name: str) -> RawState:
    unit = unit_class(name.encode())
    unit.load()

    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    result = ""
    for interface in ("Service", "Mount"):
        if hasattr(unit, interface):
            try:
                result = text(getattr(unit, interface).Result)
            except Exception:  # not this unit's type: pystemd raises from the bus
                continue
            break
    return RawState(
        load_state=text(unit.Unit.LoadState),
        active_state=text(unit.Unit.ActiveState),
        sub_state=text(unit.Unit.SubState),
        result=result,
        requires=tuple(text(d) for d in unit.Unit.Requires),
    )
