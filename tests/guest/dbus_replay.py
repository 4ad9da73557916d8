"""Record what systemd's D-Bus really answers about a pod's units, and replay it to `kvmpod status`.

In a booted guest (tests/e2e/test_pod_valid.py installs this file as a script and runs it), the
recorder asks systemd through pystemd, exactly as `kvmpod status` does, about every unit that
status reads, and keeps each answer as pystemd returned it (bytes, lists of bytes, integers) or the
error it raised. It prints that record beside the states `kvmpod status` computed from it.

In the fast tests, `replay_class(record)` stands in for pystemd's `Unit` class, so the real reader
(`status._read_unit`) meets the real values (tests/guest/test_status_replay.py). Record again
(see tests/guest/fixtures/README) when the reader starts reading a property not recorded here.
"""

import json
import sys

# What is recorded for every unit read: what the reader reads, and two dependency lists it may come
# to need. Each is one D-Bus call, and in a TCG guest on a busy host each costs.
PROPERTIES = {
    "Unit": ("LoadState", "ActiveState", "SubState", "Requires", "Requisite", "BindsTo"),
    "Service": ("Result",),
    "Mount": ("Result",),
}


def encode(value):
    if isinstance(value, bytes):
        return {"bytes": value.decode("utf-8", "surrogateescape")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"repr": repr(value)}


def decode(value):
    if isinstance(value, dict):
        if "bytes" in value:
            return value["bytes"].encode("utf-8", "surrogateescape")
        return value["repr"]
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


class _Interface:
    def __init__(self, unit: str, interface: str, properties: dict):
        self._where = f"{unit} {interface}"
        self._properties = properties

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self._properties[name]
        except KeyError:
            raise AttributeError(f"{self._where}.{name} was not recorded; record the fixture again "
                                 "(tests/guest/fixtures/README)") from None
        if isinstance(value, dict) and "raises" in value:
            raise RuntimeError(value["raises"])
        return decode(value)


def replay_class(record: dict):
    """A stand-in for pystemd.systemd1.Unit that answers from `record` ({unit: recorded answers})."""

    class ReplayUnit:
        def __init__(self, name: bytes):
            self._name = name.decode()
            if self._name not in record:
                raise KeyError(f"{self._name} was not recorded; record the fixture again (tests/guest/fixtures/README)")
            self._answers = record[self._name]

        def load(self) -> None:
            pass

        def __getattr__(self, interface: str):
            if interface.startswith("_") or not self._answers["interfaces"].get(interface):
                raise AttributeError(interface)
            return _Interface(self._name, interface, self._answers["properties"][interface])

    return ReplayUnit


def recording_class(record: dict):
    """pystemd's Unit, asked eagerly for PROPERTIES, answering from what it recorded into `record`."""
    from pystemd.systemd1 import Unit

    replay = replay_class(record)

    def recording_unit(name: bytes):
        unit = Unit(name)
        unit.load()
        answers = {"interfaces": {}, "properties": {}}
        for interface, properties in PROPERTIES.items():
            present = hasattr(unit, interface)
            answers["interfaces"][interface] = present
            if not present:
                continue
            got = answers["properties"][interface] = {}
            for prop in properties:
                try:
                    got[prop] = encode(getattr(getattr(unit, interface), prop))
                except Exception as error:  # recorded as pystemd raised it, as the reader may meet it
                    got[prop] = {"raises": f"{type(error).__name__}: {error}"}
        record[name.decode()] = answers
        return replay(name)

    return recording_unit


def main() -> int:
    from kvmpod.guest import status

    record: dict = {}
    units = status.pod_units(status.read_generated(status.GENERATOR_DIR))
    recorder = recording_class(record)
    states = status.unit_states(units, lambda name: status._read_unit(recorder, name))
    json.dump({"units": [[u.name, u.kind] for u in units], "dbus": record,
               "states": json.loads(status.render_json(states))}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
