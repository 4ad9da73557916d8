"""Which volumes are staged: an appVolume equal to its pod volume shares it; each app's differing one
is staged on its own (`<app>.<volume>`)."""

from helpers import host, pod

from kvmpod.pod.staging import staged_host_volumes


def app(name: str, app_volume: dict | None) -> dict:
    mount = {"volume": "v", "path": "/data"}
    if app_volume is not None:
        mount["appVolume"] = app_volume
    return {"name": name, "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}, "mounts": [mount]}


def test_an_app_volume_equal_to_the_pod_volume_is_not_staged_again():
    p = pod([host("v", "/srv/v")], [app("a", host("v", "/srv/v"))])
    assert [s.stage_name for s in staged_host_volumes(p)] == ["v"]


def test_each_apps_differing_app_volume_is_staged_on_its_own():
    p = pod([host("v", "/srv/v")], [app("a", host("v", "/srv/a")), app("b", host("v", "/srv/b")), app("c", None)])
    assert [(s.stage_name, s.volume.source) for s in staged_host_volumes(p)] == [
        ("v", "/srv/v"), ("a.v", "/srv/a"), ("b.v", "/srv/b")]
