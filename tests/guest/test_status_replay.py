"""`kvmpod status`'s D-Bus reader against what systemd really answered in a guest boot.

tests/guest/fixtures/status-boot-a.json was recorded once in boot A (tests/e2e/test_pod_valid.py,
tests/guest/dbus_replay.py): every D-Bus answer the reader asked for, as pystemd returned it (bytes,
lists of bytes), and the states `kvmpod status` computed from them in that guest. Replaying the
answers into the real reader (`_read_unit`, with a stand-in for pystemd's Unit class) must give those
states again: reading Requires as empty, dropping Result or mishandling bytes changes them.
"""

import json
from pathlib import Path

import pytest

from kvmpod.guest.status import PodUnit, _read_unit, render_json, unit_states

from .dbus_replay import replay_class

FIXTURE = Path(__file__).parent / "fixtures" / "status-boot-a.json"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())


def replayed(recorded: dict) -> list:
    replay = replay_class(recorded["dbus"])
    units = [PodUnit(name, kind) for name, kind in recorded["units"]]
    return unit_states(units, lambda name: _read_unit(replay, name))


def test_replay_gives_what_kvmpod_status_printed_in_the_guest(recorded):
    assert json.loads(render_json(replayed(recorded))) == recorded["states"]


def test_the_record_is_a_real_pod_with_a_missing_volume(recorded):
    """What the boot left: one volume the host did not export, so its app could not start."""
    states = {s.name: s for s in replayed(recorded)}
    missing = states["mnt-missing.mount"]
    assert (missing.load_state, missing.active_state, missing.sub_state, missing.result) == (
        "loaded", "failed", "failed", "exit-code")
    orphan = states["orphan.service"]
    assert (orphan.active_state, orphan.reason) == ("inactive", "not started: required mnt-missing.mount failed")
    assert states["writer.service"].reason == "" and states["writer.service"].result == "success"
    assert states["mnt-results.mount"].active_state == "active"


def test_requires_are_read_as_systemd_lists_them(recorded):
    replay = replay_class(recorded["dbus"])
    orphan = _read_unit(replay, "orphan.service")
    bind_mounts = {name for name, kind in recorded["units"] if kind == "mount" and "-orphan-" in name}
    assert bind_mounts and bind_mounts <= set(orphan.requires), orphan.requires
    assert all(isinstance(r, str) for r in orphan.requires)


def test_an_unrecorded_property_names_the_fix(recorded):
    replay = replay_class(recorded["dbus"])
    with pytest.raises(AttributeError, match="was not recorded; record the fixture again"):
        replay(b"orphan.service").Unit.NoSuchProperty
