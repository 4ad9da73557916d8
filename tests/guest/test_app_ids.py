"""The app-ids oneshot: an app needs it when either of its ids is missing from the guest's database."""

from kvmpod.guest.app_services import Identity, plan_app_ids


def unit_lines(outputs) -> list[str]:
    return outputs[0].content.splitlines()


def test_an_app_with_only_its_group_missing_gets_the_unit_and_every_such_app_is_ordered():
    ids = {"known": Identity(0, 0), "group-only": Identity(0, 2001), "user-only": Identity(2000, 0)}

    outputs = plan_app_ids(ids, guest_uids={0}, guest_gids={0}, manifest_path="/etc/kvmpod/pod.json")

    assert "Before=group-only.service user-only.service" in unit_lines(outputs)
    assert 'ExecStart=/bin/systemd-sysusers --inline "g kvmpod-gid-2001 2001" "u kvmpod-uid-2000 2000:0 - - -"' \
        in unit_lines(outputs)
    assert sorted(o.path for o in outputs[1:]) == ["group-only.service.requires/kvmpod-app-ids.service",
                                                   "user-only.service.requires/kvmpod-app-ids.service"]


def test_no_unit_when_the_guest_knows_every_id():
    assert plan_app_ids({"a": Identity(0, 0)}, {0}, {0}, "/etc/kvmpod/pod.json") == []


def test_a_supplementary_gid_the_guest_lacks_gets_an_entry_and_orders_its_app():
    ids = {"known": Identity(0, 0), "extra": Identity(0, 0)}

    outputs = plan_app_ids(ids, {0}, {0, 4}, "/etc/kvmpod/pod.json", {"known": (4,), "extra": (4, 2727)})

    assert 'ExecStart=/bin/systemd-sysusers --inline "g kvmpod-gid-2727 2727"' in unit_lines(outputs)
    assert "Before=extra.service" in unit_lines(outputs)
    assert [o.path for o in outputs[1:]] == ["extra.service.requires/kvmpod-app-ids.service"]
