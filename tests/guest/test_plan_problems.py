"""Problems found while planning, after the manifest passed validation: each is reported with its
field, all of them at once, and nothing is written. (Kept loose on wording: another branch is
reworking where such values are refused; the field and the offending path are what must stay.)"""

import json

from kvmpod.guest.generator import main

OUT = "/run/systemd/generator"


def manifest(apps: list[dict], volumes: list[dict]) -> str:
    return json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps, "volumes": volumes})


def app(name: str, mounts: list[dict], mount_points: list[dict] | None = None) -> dict:
    section = {"exec": ["/bin/true"], "user": "0", "group": "0"}
    if mount_points is not None:
        section["mountPoints"] = mount_points
    return {"name": name, "image": {"name": f"example.com/{name}"}, "app": section, "mounts": mounts}


def run(fs, capsys, text: str) -> tuple[int, list[str]]:
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=text)
    fs.create_dir(OUT)
    status = main(["--root", "/guest", OUT])
    return status, capsys.readouterr().err.splitlines()


def test_every_path_a_unit_file_cannot_hold_is_named_by_its_field(fs, capsys):
    mounts = [{"volume": "v", "path": "/two\rlines"}, {"volume": "v", "path": "/ok"},
              {"volume": "v", "path": "/three\rlines"}]
    status, lines = run(fs, capsys, manifest([app("a", mounts)], [{"name": "v", "kind": "host", "source": "/srv/v"}]))

    assert status == 1
    assert [line.split(": ")[1] for line in lines[:-1]] == ["apps[0].mounts[0].path", "apps[0].mounts[2].path"]
    assert "two\\rlines" in lines[0] and "three\\rlines" in lines[1]
    assert fs.listdir(OUT) == []


def test_an_implicit_volume_whose_name_is_taken_is_named_by_its_mount_point(fs, capsys):
    points = [{"name": "logs", "path": "/var/log"}, {"name": "data", "path": "/data"}]
    volumes = [{"name": "a-data", "kind": "host", "source": "/srv/a-data"},
               {"name": "a-logs", "kind": "host", "source": "/srv/a-logs"}]
    status, lines = run(fs, capsys, manifest([app("a", [], points)], volumes))

    assert status == 1
    assert lines[0].startswith("kvmpod-generator: apps[0].app.mountPoints[0].path: the implicit empty volume for "
                               "mount point 'logs' would be named 'a-logs'")
    assert lines[1] == ("kvmpod-generator: apps[0].app.mountPoints[1].path: the implicit empty volume for mount point "
                        "'data' would be named 'a-data', which the pod already uses; add a mount for '/data' to "
                        "apps[0].mounts")
    assert fs.listdir(OUT) == []


def test_every_bad_target_is_reported_at_once(fs, capsys):
    fs.create_symlink("/guest/opt/stage2/a/rootfs/loop", "loop")
    # (Paths a unit file cannot hold, e.g. ending in a space, are refused earlier, when the manifest
    # is validated: tests/guest/test_fail_closed.py.)
    paths = ["/loop/x", "/loop/y", "/", "/..", "/same", "/same", "/b", "/b"]
    mounts = [{"volume": "v", "path": p} for p in paths]
    status, lines = run(fs, capsys, manifest([app("a", mounts)], [{"name": "v", "kind": "host", "source": "/srv/v"}]))

    assert status == 1
    fields = [line.split(": ")[1] for line in lines[:-1]]
    assert fields == [f"apps[0].mounts[{i}].path" for i in (0, 1, 2, 3, 5, 7)], lines  # the second on a path


def test_a_bad_target_from_a_mount_point_is_named_by_its_mount_point_field(fs, capsys):
    fs.create_symlink("/guest/opt/stage2/a/rootfs/var/log", "log")  # a loop, found only when planning
    points = [{"name": "logs", "path": "/var/log/app"}]
    status, lines = run(fs, capsys, manifest([app("a", [], points)], []))

    assert status == 1
    assert lines[-2].startswith("kvmpod-generator: apps[0].app.mountPoints[0].path: more than 40 symlinks "
                                "while resolving '/var/log/app'"), lines
    assert fs.listdir(OUT) == ["a.service.d"]  # only the refusal of the staged app: nothing mounted


def test_a_mount_the_renderer_refuses_is_named_with_every_other_one(fs, capsys, monkeypatch):
    """The renderer's last guard (a ValueError from a path the checks before it let through): each
    mount it refuses is reported with its field, all at once, and nothing is written."""
    from kvmpod.guest import mount_units

    def refuse(app_name, mount, settings):
        raise ValueError(f"{mount.target!r} cannot be named")

    monkeypatch.setattr(mount_units, "_bind_mount", refuse)
    mounts = [{"volume": "v", "path": "/one"}, {"volume": "v", "path": "/two"}]
    status, lines = run(fs, capsys, manifest([app("a", mounts), app("b", mounts[:1])],
                                             [{"name": "v", "kind": "host", "source": "/srv/v"}]))
    assert status == 1
    assert lines[:-1] == ["kvmpod-generator: apps[0].mounts[0].path: '/one' cannot be named; choose another path",
                          "kvmpod-generator: apps[0].mounts[1].path: '/two' cannot be named; choose another path",
                          "kvmpod-generator: apps[1].mounts[0].path: '/one' cannot be named; choose another path"]
    assert fs.listdir(OUT) == []


def test_a_symlink_above_every_apps_rootfs_is_named_for_each_app(fs, capsys):
    fs.create_dir("/guest/real")
    fs.create_symlink("/guest/opt/stage2", "/real")
    mounts = [{"volume": "v", "path": "/one"}]
    status, lines = run(fs, capsys, manifest([app("a", mounts), app("b", mounts)],
                                             [{"name": "v", "kind": "host", "source": "/srv/v"}]))
    assert status == 1
    assert lines[:-1] == [
        f"kvmpod-generator: apps[{i}].name: /opt/stage2 is a symlink in the guest; every directory from / down to "
        f"/opt/stage2/{name}/rootfs must be a real one, so that nothing the app mounts lands outside it; "
        "replace the link" for i, name in enumerate("ab")]
    assert fs.listdir(OUT) == []


def test_a_mount_path_that_resolves_to_trailing_white_space_is_named_for_each_mount(fs, capsys):
    """A mount path through a link to "dir " (systemd would strip the space from Where=)."""
    fs.create_dir("/guest/opt/stage2/a/rootfs/real ")
    fs.create_symlink("/guest/opt/stage2/a/rootfs/l1", "/real ")
    fs.create_symlink("/guest/opt/stage2/a/rootfs/l2", "real ")
    mounts = [{"volume": "v", "path": "/l1"}, {"volume": "v", "path": "/l2"}]
    status, lines = run(fs, capsys, manifest([app("a", mounts)], [{"name": "v", "kind": "host", "source": "/srv/v"}]))
    assert status == 1
    assert lines[:-1] == [
        f"kvmpod-generator: apps[0].mounts[{i}].path: '/l{i + 1}' ends in white space, which systemd strips from "
        "Where=; rename the directory" for i in range(2)]
    assert fs.listdir(OUT) == ["a.service.d"]  # nothing mounted; the staged app refused (fail closed)
    assert fs.listdir(f"{OUT}/a.service.d") == ["50-kvmpod-invalid-manifest.conf"]


LONG_APP = "a" * 200
LONG = "v" * 60


def test_an_app_volume_whose_staging_directory_is_too_long_is_named_for_each_mount(fs, capsys):
    mounts = [{"volume": name, "path": f"/{name[:5]}{k}", "appVolume": {"name": name, "kind": "empty"}}
              for k, name in enumerate([LONG, LONG + "w"])]
    volumes = [{"name": LONG, "kind": "host", "source": "/srv/v"}, {"name": LONG + "w", "kind": "host",
                                                                    "source": "/srv/w"}]
    status, lines = run(fs, capsys, manifest([app(LONG_APP, mounts)], volumes))
    assert status == 1
    assert lines[:-1] == [
        f"kvmpod-generator: apps[0].mounts[{j}].appVolume.name: makes the staging directory "
        f"/mnt/{(LONG_APP + '.' + name)[:40]}… longer than 255 bytes; use shorter app or volume names"
        for j, name in enumerate([LONG, LONG + "w"])]


def test_an_implicit_volume_whose_staging_directory_is_too_long_is_named_for_each_mount_point(fs, capsys):
    points = [{"name": f"{LONG}{k}", "path": f"/p{k}"} for k in range(2)]
    status, lines = run(fs, capsys, manifest([app(LONG_APP, [], points)], []))
    assert status == 1
    assert lines[:-1] == [
        f"kvmpod-generator: apps[0].app.mountPoints[{k}].path: the implicit empty volume for mount point "
        f"'{LONG}{k}' makes the staging directory /mnt/{(LONG_APP + '-' + LONG)[:40]}… longer than 255 bytes; "
        "use shorter app or volume names" for k in range(2)]
