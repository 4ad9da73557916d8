"""Which mounts an app gets (rkt's GenerateMounts), in the corners the golden cases leave out."""

import json

from kvmpod.guest.generator import main

OUT = "/run/systemd/generator"
VOLUME = {"name": "v", "kind": "host", "source": "/srv/v"}


def run(fs, capsys, app: dict, image_manifest: dict | None = None) -> tuple[int, list[str], list[str]]:
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=json.dumps(
        {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [app], "volumes": [VOLUME]}))
    fs.create_dir("/guest/opt/stage2/a/rootfs")
    if image_manifest is not None:
        fs.create_file("/guest/opt/stage2/a/manifest", contents=json.dumps(image_manifest))
    fs.create_dir(OUT)
    status = main(["--root", "/guest", OUT])
    return status, sorted(fs.listdir(OUT)), capsys.readouterr().err.splitlines()


def test_an_app_without_an_app_section_whose_unit_the_guest_ships_gets_its_mounts(fs, capsys):
    """appc allows an image without `app`; the guest's own a.service then runs it, with its mounts."""
    fs.create_file("/guest/etc/systemd/system/a.service", contents="[Service]\nExecStart=/bin/true\n")
    app = {"name": "a", "image": {"name": "example.com/a"}, "mounts": [{"volume": "v", "path": "/data"}]}

    status, written, err = run(fs, capsys, app, {"acKind": "ImageManifest", "acVersion": "0.8.11",
                                                 "name": "example.com/a"})

    assert (status, err) == (0, [])
    assert written == ["a.service.requires", "mnt-v.mount", "opt-stage2-a-rootfs-data.mount"]


def test_a_covered_mount_point_does_not_end_the_search_for_uncovered_ones(fs, capsys):
    section = {"exec": ["/bin/true"], "user": "0", "group": "0",
               "mountPoints": [{"name": "v", "path": "/data"}, {"name": "logs", "path": "/var/log", "readOnly": True}]}
    app = {"name": "a", "image": {"name": "example.com/a"}, "app": section, "mounts": [{"volume": "v", "path": "/data"}]}

    status, written, err = run(fs, capsys, app)

    assert status == 0
    assert "kvmpod-empty-volume-a-logs.service" in written and "opt-stage2-a-rootfs-var-log.mount" in written
    assert "Options=rbind,ro" in fs.get_object(f"{OUT}/opt-stage2-a-rootfs-var-log.mount").contents.splitlines()
    assert err == ["kvmpod-generator: app 'a': no volume for mount point 'logs' (/var/log); using an implicit "
                   "empty volume 'a-logs', which is lost when the pod stops"]


def test_symlinks_resolve_under_any_spelling_of_the_root_from_any_cwd(tmp_path, monkeypatch):
    """Real files: --root with a trailing slash, run from another directory, still reads the app's links."""
    root = tmp_path / "guestX"
    rootfs = root / "opt/stage2/a/rootfs"
    (rootfs / "real").mkdir(parents=True)
    (rootfs / "link").symlink_to("/real")
    (root / "etc/kvmpod").mkdir(parents=True)
    (root / "etc/kvmpod/pod.json").write_text(json.dumps({
        "acKind": "PodManifest", "acVersion": "0.8.11", "volumes": [VOLUME],
        "apps": [{"name": "a", "image": {"name": "example.com/a"},
                  "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
                  "mounts": [{"volume": "v", "path": "/link/data"}]}]}))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    assert main(["--root", f"{root}/", str(out)]) == 0
    assert (out / "opt-stage2-a-rootfs-real-data.mount").is_file()
