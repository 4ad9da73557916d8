"""The image config as docker2aci's app (lib/internal/internal.go): exec, env, user and group looked
up in the image, working directory, ports, volumes, labels, docker2aci's annotations; os/arch."""

import json
import os
from pathlib import Path

import pytest

from kvmpod.host.images.image_config import (convert_ports, convert_volumes, resolve_command, resolve_user,
                                             sanitize_ac_identifier, sanitize_ac_name, split_name)
from kvmpod.host.images.image_source import ImageError
from kvmpod.host.images.oci_writer import image_config, layer_tar, write_oci_image, write_oci_layout
from kvmpod.host.images.store import fetch
from kvmpod.pod.manifest import load_json, parse_image_app
from kvmpod.pod.problems import InvalidInput


@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [])),
    ("root", (0, 0, [])),
    ("web", (1000, 1001, [1002])),      # primary group from passwd, other groups listing the user
    ("1000", (1000, 1001, [1002])),     # a uid in passwd: its primary group
    ("4242", (4242, 0, [])),            # a uid not in passwd: gid 0, as Docker
    ("1000:1002", (1000, 1002, [])),
    ("web:extra", (1000, 1002, [])),
    ("4242:4343", (4242, 4343, [])),
    ("web:0", (1000, 0, [])),
])
def test_user_and_group_lookups(busybox_rootfs: Path, user, expected):
    assert resolve_user(str(busybox_rootfs), user) == expected


@pytest.mark.parametrize("user, message", [
    ("nobody-here", "its User 'nobody-here': no user 'nobody-here' in the image's /etc/passwd (give a uid, or add "
                    "the user to the image)"),
    ("web:nogroup", "its User 'web:nogroup': no group 'nogroup' in the image's /etc/group (give a gid, or add the "
                    "group to the image)"),
])
def test_unknown_users_and_groups_are_refused(busybox_rootfs: Path, user, message):
    with pytest.raises(ImageError) as error:
        resolve_user(str(busybox_rootfs), user)
    assert str(error.value) == message


def test_an_image_with_odd_ids_is_refused_by_name_never_with_a_traceback(busybox_rootfs: Path):
    """Ids are read by pod/user_database.py: a number of 5,000 digits, which int() refuses, is no number
    (kvmpod image fetch used to end in a ValueError), and a malformed entry is passed over."""
    huge = "9" * 5000
    with pytest.raises(ImageError, match="no user '9999"):
        resolve_user(str(busybox_rootfs), huge)
    with pytest.raises(ImageError, match="no group '9999"):
        resolve_user(str(busybox_rootfs), f"web:{huge}")
    (busybox_rootfs / "etc/group").write_text(f"# extra:x:1:\nextra:x:{huge}:\nextra:x:²:\nextra\nextra:x:1002:\n")
    assert resolve_user(str(busybox_rootfs), "web:extra") == (1000, 1002, [])
    (busybox_rootfs / "etc/group").unlink()
    assert resolve_user(str(busybox_rootfs), "web:7") == (1000, 7, [])
    with pytest.raises(ImageError, match="no group 'extra'"):
        resolve_user(str(busybox_rootfs), "web:extra")


def test_passwd_through_a_symlink_out_of_the_image_is_not_read(busybox_rootfs: Path, tmp_path: Path):
    (tmp_path / "host-passwd").write_text("hostonly:x:5555:5555::/:/bin/sh\n")
    (busybox_rootfs / "etc/passwd").unlink()
    os.symlink("../../../../../../../../" + str(tmp_path / "host-passwd").lstrip("/"), busybox_rootfs / "etc/passwd")
    with pytest.raises(ImageError, match="no user 'hostonly'"):
        resolve_user(str(busybox_rootfs), "hostonly")
    os.unlink(busybox_rootfs / "etc/passwd")
    os.symlink("/etc/shadow-copy", busybox_rootfs / "etc/passwd")  # absolute: inside the image
    (busybox_rootfs / "etc/shadow-copy").write_text("inside:x:7:7::/:/bin/sh\n")
    assert resolve_user(str(busybox_rootfs), "inside") == (7, 7, [])


def test_ports_as_docker2aci_names_them():
    warnings: list[str] = []
    assert convert_ports({"8080/tcp": {}, "53/udp": {}, "80": {}, "9/sctp": {}, "x/tcp": {}}, warnings.append) == [
        {"name": "53-udp", "protocol": "udp", "port": 53, "count": 1, "socketActivated": False},
        {"name": "80", "protocol": "tcp", "port": 80, "count": 1, "socketActivated": False},
        {"name": "8080-tcp", "protocol": "tcp", "port": 8080, "count": 1, "socketActivated": False}]
    assert warnings == ["ExposedPorts '9/sctp': kvmpod serves tcp and udp ports; left out",
                        "ExposedPorts 'x/tcp' is not a port number; left out"]


def test_volumes_as_docker2aci_names_them():
    assert convert_volumes({"/var/lib/data": {}, "/data": {}, "/Data": {}, "relative": {}}) == [
        {"name": "volume-data", "path": "/Data", "readOnly": False},
        {"name": "volume-data-1", "path": "/data", "readOnly": False},
        {"name": "volume-var-lib-data", "path": "/var/lib/data", "readOnly": False}]


def test_names_sanitized_as_appc_does():
    assert sanitize_ac_name("8080/tcp") == "8080-tcp" and sanitize_ac_name("-Volume/X-") == "volume-x"
    assert sanitize_ac_identifier("Example.com/Web App") == "example.com/web_app"
    assert split_name("example.com:5000/web:1.0") == ("example.com:5000/web", "1.0")
    assert split_name("example.com:5000/web") == ("example.com:5000/web", None)
    assert split_name("web@sha256:abcd") == ("web", None)


def test_a_bare_command_is_found_on_the_image_path(busybox_rootfs: Path):
    (busybox_rootfs / "usr/bin").mkdir(parents=True)
    os.symlink("../../bin/busybox", busybox_rootfs / "usr/bin/env")
    assert resolve_command(str(busybox_rootfs), "sh", {"PATH": "/usr/bin:/bin"}) == "/bin/sh"
    assert resolve_command(str(busybox_rootfs), "env", {"PATH": "/usr/bin:/bin"}) == "/usr/bin/env"
    assert resolve_command(str(busybox_rootfs), "env", {"PATH": "/bin"}) is None
    assert resolve_command(str(busybox_rootfs), "sh", {}) == "/bin/sh"  # Docker's default PATH
    (busybox_rootfs / "bin/data").write_text("not executable")
    assert resolve_command(str(busybox_rootfs), "data", {"PATH": "/bin"}) is None


def _manifest(store: Path, rootfs: Path, tmp_path: Path, config: dict, **image) -> dict:
    out = tmp_path / "layout"
    write_oci_layout(str(rootfs), config, str(out), ref="example.com/web:1.0")
    stored = fetch(f"oci:{out}:example.com/web:1.0")
    text = (Path(stored.path) / "manifest").read_text()
    parse_image_app(load_json(text, "manifest"), "manifest")  # kvmpod's own parser takes it
    return json.loads(text)


def test_the_whole_mapping(store: Path, busybox_rootfs: Path, tmp_path: Path):
    config = {"Entrypoint": ["sh", "-c"], "Cmd": ["exec id"], "Env": ["PATH=/bin", "A=1=2", "BROKEN"],
              "User": "web", "WorkingDir": "/srv/www", "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/data": {}},
              "Labels": {"org.opencontainers.image.title": "Web", "Maintainer": "me"}}
    manifest = _manifest(store, busybox_rootfs, tmp_path, config)
    annotations = {a["name"]: a["value"] for a in manifest["annotations"]}
    assert manifest["name"] == "example.com/web"
    assert manifest["labels"] == [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"},
                                  {"name": "version", "value": "1.0"}]
    assert manifest["app"] == {
        "exec": ["/bin/sh", "-c", "exec id"], "user": "1000", "group": "1001", "supplementaryGIDs": [1002],
        "environment": [{"name": "PATH", "value": "/bin"}, {"name": "A", "value": "1=2"}],
        "workingDirectory": "/srv/www",
        "mountPoints": [{"name": "volume-data", "path": "/data", "readOnly": False}],
        "ports": [{"name": "8080-tcp", "protocol": "tcp", "port": 8080, "count": 1, "socketActivated": False}]}
    assert annotations["org.opencontainers.image.title"] == "Web" and annotations["maintainer"] == "me"
    assert annotations["appc.io/docker/repository"] == "web"
    assert annotations["appc.io/docker/registryurl"] == "example.com"
    assert annotations["appc.io/docker/tag"] == "1.0"
    assert annotations["appc.io/docker/entrypoint"] == '["sh", "-c"]'
    assert annotations["appc.io/docker/cmd"] == '["exec id"]'
    assert annotations["appc.io/docker/manifesthash"].startswith("sha256:")
    assert annotations["appc.io/docker/imageid"].startswith("sha256:")
    assert annotations["appc.io/docker/originalname"] == f"oci:{tmp_path / 'layout'}:example.com/web:1.0"
    assert (Path(store) / manifest["annotations"][0]["value"]).exists() is False  # (values are text, not paths)


def test_an_empty_config_is_root_with_no_exec(store: Path, busybox_rootfs: Path, tmp_path: Path):
    manifest = _manifest(store, busybox_rootfs, tmp_path, {})
    assert manifest["app"] == {"exec": [], "user": "0", "group": "0", "environment": [], "mountPoints": [],
                               "ports": []}


def test_a_working_directory_that_is_a_file_is_refused(store: Path, busybox_rootfs: Path, tmp_path: Path):
    with pytest.raises(InvalidInput, match="its WorkingDir '/etc/passwd/x' is not a directory in the image"):
        _manifest(store, busybox_rootfs, tmp_path, {"WorkingDir": "/etc/passwd/x"})


def test_an_unknown_user_is_refused_at_fetch_and_nothing_stored(store: Path, busybox_rootfs: Path, tmp_path: Path):
    with pytest.raises(InvalidInput, match="no user 'ghost' in the image's /etc/passwd"):
        _manifest(store, busybox_rootfs, tmp_path, {"User": "ghost"})
    assert [p for p in store.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("os_name, arch", [("linux", "arm64"), ("windows", "amd64"), ("linux", "s390x")])
def test_another_platform_is_refused(store: Path, tmp_path: Path, busybox_rootfs: Path, os_name, arch):
    layer = layer_tar(str(busybox_rootfs))
    import hashlib
    write_oci_image(str(tmp_path / "img"), image_config({}, ["sha256:" + hashlib.sha256(layer).hexdigest()], arch,
                                                        os_name), [(layer, "application/vnd.oci.image.layer.v1.tar")])
    with pytest.raises(InvalidInput) as error:
        fetch(f"oci:{tmp_path / 'img'}")
    assert str(error.value) == (f"image oci:{tmp_path / 'img'}: is an image for {os_name}/{arch}; this host runs "
                                f"linux/amd64 (give an image built for linux/amd64)")
