"""rkt's command line -> the pod manifest: every flag compared with the manifest the real parser
reads, the guest's plan where it matters, every error under its flag."""

import json
import os

import pytest

from kvmpod.guest.generator import plan_pod
from kvmpod.guest.mount_units import GuestSettings
from kvmpod.host.pods.command_line import (AppLine, ImageInfo, PodFlags, build_pod, image_name_to_app_name,
                                           resolve_and_build, split_apps)
from kvmpod.pod.isolators import read_isolators
from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.model import EnvironmentVariable, Mount, MountPoint, Volume
from kvmpod.pod.problems import InvalidInput, Problem

WEB = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/web",
       "labels": [{"name": "version", "value": "1.0"}],
       "app": {"exec": ["/bin/web", "--serve"], "user": "100", "group": "101", "workingDirectory": "/srv",
               "environment": [{"name": "A", "value": "image"}, {"name": "PATH", "value": "/bin"}],
               "mountPoints": [{"name": "cache", "path": "/var/cache"}],
               "isolators": [{"name": "resource/memory", "value": {"limit": "1G"}}]}}
NO_APP = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/base"}


def infos(**manifests) -> dict[str, ImageInfo]:
    return {word: ImageInfo(word, (m or {}).get("name", os.path.basename(word)), f"/images/{word}", m)
            for word, m in manifests.items()}


def build(words: list[str], flags: PodFlags = PodFlags(), **manifests):
    return build_pod(flags, split_apps(words), infos(**manifests))


def problems(words: list[str], flags: PodFlags = PodFlags(), **manifests) -> list[Problem]:
    with pytest.raises(InvalidInput) as caught:
        build(words, flags, **manifests)
    return caught.value.problems


def fields(found: list[Problem]) -> list[str]:
    return [p.field for p in found]


# ---------------------------------------------------------------- argv -> app lines

def test_split_apps_images_flags_args_and_separators():
    lines = split_apps(["web", "--name", "a", "--exec=/bin/x", "--readonly-rootfs", "--", "1", "--name", "---",
                        "db", "--readonly-rootfs=false", "base", "--", "-x", "---", "---", "last"])
    assert lines == [AppLine("web", [("--name", "a"), ("--exec", "/bin/x"), ("--readonly-rootfs", "true")],
                             ["1", "--name"]),
                     AppLine("db", [("--readonly-rootfs", "false")]),
                     AppLine("base", [], ["-x"]),
                     AppLine("last")]


@pytest.mark.parametrize("words, field, words_in_message", [
    (["--", "x"], "--", "an image must come before"),
    (["web", "--", "a", "---", "--", "b"], "--", "an image must come before"),
    (["web", "--name"], "--name", "needs a value"),
    (["web", "--name", "--"], "--name", "needs a value"),
    (["web", "--volume", "x,kind=empty"], "--volume", "pod flag: put it before the first image"),
    (["web", "--memory=1", "--cpus", "2"], "--cpus", "pod flag"),
    (["web", "--bogus"], "--bogus", "is not an app flag"),
    (["web", "--readonly-rootfs=maybe"], "--readonly-rootfs", "=true/=false"),
    (["web", "---", "--name", "x"], "--name", "right after ---"),
])
def test_split_apps_refusals_name_the_flag(words, field, words_in_message):
    with pytest.raises(InvalidInput) as caught:
        split_apps(words)
    assert caught.value.problems[0].field == field
    assert words_in_message in caught.value.problems[0].message


# ---------------------------------------------------------------- app names

@pytest.mark.parametrize("image, app", [
    ("example.com/web:1.0", "web"),  # the case: a container reference's tag is no part of the name
    ("coreos.com/etcd", "etcd"),  # rkt's own cases (common_test.go)
    ("docker://registry.hub.docker.com/library/fedora", "fedora"),
    ("localhost:5000/team/Web_Server:v2", "web-server"),
    ("quay.io/x/app@sha256:abcd", "app"),
    ("busybox", "busybox"),
    ("--Odd..Name--", "odd--name"),
    ("example.com/___", None),
    ("", None),
])
def test_image_name_to_app_name(image, app):
    assert image_name_to_app_name(image) == app


def test_app_names_unique_and_clashes_say_use_name():
    found = problems(["web", "web"], web=WEB)
    assert fields(found) == ["image web"] and "--name" in found[0].message
    built = build(["web", "web", "--name", "web2"], web=WEB)
    assert [a.name for a in built.pod.apps] == ["web", "web2"]
    assert built.images == {"web": "/images/web", "web2": "/images/web"}
    found = problems(["web", "--name", "Bad_Name"], web=WEB)
    assert fields(found) == ["--name Bad_Name"]
    found = problems(["img"], img={**WEB, "name": "example.com/___"})
    assert fields(found) == ["image img"] and "--name NAME" in found[0].message


# ---------------------------------------------------------------- each flag into the manifest

def test_image_app_copied_as_rkt_did_and_parsed_by_the_real_parser():
    built = build(["web"], web=WEB)
    assert built.document["apps"][0]["app"] == WEB["app"]
    assert built.document["apps"][0]["image"] == {"name": "example.com/web", "labels": WEB["labels"]}
    assert parse_pod_manifest(json.loads(json.dumps(built.document))) == built.pod
    app = built.pod.apps[0]
    assert (app.name, app.image_name, app.app.exec, app.app.user, app.app.group, app.app.working_directory) == \
        ("web", "example.com/web", ("/bin/web", "--serve"), "100", "101", "/srv")


def test_app_flags_override_the_image():
    built = build(["web", "--exec", "/bin/other", "--user", "nobody", "--group", "nogroup", "--working-dir", "/tmp",
                   "--readonly-rootfs", "--memory", "64Mi", "--cpu", "500m", "--", "a b", "$x"], web=WEB)
    app = built.pod.apps[0]
    assert app.app.exec == ("/bin/other", "a b", "$x")
    assert (app.app.user, app.app.group, app.app.working_directory, app.read_only_rootfs) == \
        ("nobody", "nogroup", "/tmp", True)
    limits, found, _ = read_isolators(app.app.isolators, "apps[0].app.isolators", 0)
    assert found == []
    assert limits.memory_max == 64 * 2**20 and limits.cpu_quota_percent == 50
    # the image's resource/memory is replaced, not doubled
    assert [i.name for i in app.app.isolators] == ["resource/memory", "resource/cpu"]


def test_args_are_appended_to_the_images_exec_as_rkt_did():
    assert build(["web", "--", "--port", "80"], web=WEB).pod.apps[0].app.exec == ("/bin/web", "--serve", "--port", "80")


def test_environment_order_image_file_pod_app(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nFILE=1\nA=from-file\nB=from-file\n")
    flags = PodFlags(set_env=("B=pod", "C=pod"), set_env_files=(str(env_file),))
    built = build(["web", "--set-env", "C=app", "--environment", "D=app"], flags, web=WEB)
    assert built.pod.apps[0].app.environment == (
        EnvironmentVariable("A", "from-file"), EnvironmentVariable("PATH", "/bin"), EnvironmentVariable("FILE", "1"),
        EnvironmentVariable("B", "pod"), EnvironmentVariable("C", "app"), EnvironmentVariable("D", "app"))


def test_volumes_and_mounts(tmp_path):
    (tmp_path / "data").mkdir()
    flags = PodFlags(volumes=("data,kind=host,source=data,readOnly=true,recursive=false",
                              "scratch,kind=empty,mode=0700,uid=5,gid=6"),
                     mounts=("volume=scratch,target=/scratch",), cwd=str(tmp_path))
    built = build(["web", "--mount", "volume=data,target=srv", "---", "base", "--exec", "/bin/sh",
                   "--mount", "volume=data,target=/scratch"], flags, web=WEB, base=NO_APP)
    assert built.pod.volumes == (
        Volume("data", "host", source=str(tmp_path / "data"), read_only=True, recursive=False),
        Volume("scratch", "empty", mode=0o700, uid=5, gid=6))
    web, base = built.pod.apps
    assert web.mounts == (Mount("scratch", "/scratch"), Mount("data", "/srv"))
    assert base.mounts == (Mount("data", "/scratch"),)  # the app's own wins over the pod-wide one
    assert base.app.exec == ("/bin/sh",) and (base.app.user, base.app.group) == ("0", "0")
    assert web.app.mount_points == (MountPoint("cache", "/var/cache"),)


def plan(built, tmp_path) -> dict[str, str]:
    warnings = []
    outputs = plan_pod(built.pod, str(tmp_path / "guest"), GuestSettings(manifest_path="/etc/kvmpod/pod.json"),
                       warnings.append)
    return {os.path.basename(o.path): o.content for o in outputs if getattr(o, "content", None) is not None}


def test_image_volumes_become_implicit_volumes_unless_mounted(tmp_path):
    (tmp_path / "cache").mkdir()
    units = plan(build(["web"], web=WEB), tmp_path)
    assert "kvmpod-empty-volume-web-cache.service" in units
    assert "Where=/opt/stage2/web/rootfs/var/cache" in units["opt-stage2-web-rootfs-var-cache.mount"]
    flags = PodFlags(volumes=(f"c,kind=host,source={tmp_path / 'cache'}",))
    units = plan(build(["web", "--mount", "volume=c,target=/var/cache"], flags, web=WEB), tmp_path)
    assert not any(name.startswith("kvmpod-empty-volume") for name in units)
    assert "What=/mnt/c" in units["opt-stage2-web-rootfs-var-cache.mount"]
    # a pod volume named like the mount point fills it, as in rkt
    flags = PodFlags(volumes=(f"cache,kind=host,source={tmp_path / 'cache'}",))
    units = plan(build(["web"], flags, web=WEB), tmp_path)
    assert not any(name.startswith("kvmpod-empty-volume") for name in units)
    assert "What=/mnt/cache" in units["opt-stage2-web-rootfs-var-cache.mount"]


def test_the_guest_runs_what_the_flags_say(tmp_path):
    units = plan(build(["web", "--exec", "/bin/echo", "--user", "7", "--working-dir", "/w", "--set-env", "X=1",
                        "--", "hi"], web=WEB), tmp_path)
    service = units["web.service"]
    assert "ExecStart=/bin/echo hi" in service or "/bin/echo hi" in service
    assert "User=7" in service and "WorkingDirectory=/w" in service and "Environment=" in service and "X=1" in service


# ---------------------------------------------------------------- errors, each under its flag

@pytest.mark.parametrize("volume, words_in_message", [
    ("Data,kind=empty", "not an AC Name"),
    ("data", "needs kind=host"),
    ("data,kind=tmpfs", "kind='tmpfs'"),
    ("data,kind=host", "needs source=PATH"),
    ("data,kind=host,source=/no/such/dir", "is not a directory"),
    ("data,kind=empty,mode=999", "octal mode"),
    ("data,kind=empty,uid=-1", "uid="),
    ("data,kind=empty,readOnly=yes", "readOnly='yes'"),
    ("data,kind=empty,source=/x", "takes no source"),
    ("data,kind=host,source=/tmp,mode=0755", "takes no mode"),
    ("data,kind=empty,kind=host", "given twice"),
    ("data,kind", "not KEY=VALUE"),
])
def test_volume_errors(volume, words_in_message):
    found = problems(["web"], PodFlags(volumes=(volume,)), web=WEB)
    assert found[0].field.startswith("--volume") and words_in_message in found[0].message, found


def test_errors_name_the_flag_and_nothing_else(tmp_path):
    (tmp_path / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "fifo")
    flags = PodFlags(volumes=("v,kind=empty", "v,kind=empty"), set_env=("1BAD=x",),
                     set_env_files=(str(tmp_path / "fifo"), str(tmp_path / "missing")),
                     mounts=("volume=v",))
    found = problems(["web", "--mount", "volume=nope,target=/x", "--memory", "16m", "--cpu", "lots",
                      "--set-env", "NOEQUALS", "---", "base"], flags, web=WEB, base=NO_APP)
    assert sorted(fields(found)) == sorted([
        "--volume v", f"--set-env-file {tmp_path / 'fifo'}", f"--set-env-file {tmp_path / 'missing'}", "--set-env",
        "--mount", "image base", "--set-env (app web)", "--memory (app web)", "--cpu (app web)",
        "--mount (app web)"])
    by_field = {p.field: p.message for p in found}
    assert "is a FIFO" in by_field[f"--set-env-file {tmp_path / 'fifo'}"]
    assert "--exec CMD" in by_field["image base"]
    assert "add --volume nope,kind=host" in by_field["--mount (app web)"]


def test_env_file_lines(tmp_path):
    path = tmp_path / "env"
    path.write_text("A=1\nA=2\nnot a pair\n")
    found = problems(["web"], PodFlags(set_env_files=(str(path),)), web=WEB)
    assert fields(found) == [f"--set-env-file {path}:3", f"--set-env-file {path}:2"] or \
        sorted(fields(found)) == sorted([f"--set-env-file {path}:2", f"--set-env-file {path}:3"])


def test_the_parsers_own_problems_come_back_under_the_flag():
    found = problems(["web", "--working-dir", "relative", "--user", "", "--exec", ""], web=WEB)
    assert sorted(fields(found)) == ["--exec (app web)", "--user (app web)", "--working-dir (app web)"]
    found = problems(["img"], img={**WEB, "app": {**WEB["app"], "ports": [{"name": "x"}]}})
    assert set(fields(found)) == {"image img (app web)"}
    assert all(p.message.startswith("app.ports[0].") for p in found), found


def test_no_image():
    with pytest.raises(InvalidInput) as caught:
        build_pod(PodFlags(), [], {})
    assert caught.value.problems[0].field == "IMAGE"


def test_resolve_once_and_gather_problems():
    calls = []

    def resolve(word):
        calls.append(word)
        if word == "bad":
            raise InvalidInput([Problem(f"image {word}", "does not exist")])
        return infos(web=WEB)["web"]

    assert [a.name for a in resolve_and_build(PodFlags(), ["web", "web", "--name", "b"], resolve).pod.apps] == \
        ["web", "b"]
    assert calls == ["web"]
    with pytest.raises(InvalidInput) as caught:
        resolve_and_build(PodFlags(), ["bad", "---", "bad"], resolve)
    assert fields(caught.value.problems) == ["image bad"]
