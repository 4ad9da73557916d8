"""kvmpod run's command line glue (IMAGE ... -> the pod kvmpod run boots) and kvmpod cat-manifest."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import UUID

from kvmpod.host import pod_commands
from kvmpod.host.cli import main
from kvmpod.pod.manifest import parse_pod_manifest

REPO = Path(__file__).resolve().parents[2]
IMAGE = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/web",
         "app": {"exec": ["/bin/sh", "-c", "echo hi"], "user": "0", "group": "0",
                 "mountPoints": [{"name": "cache", "path": "/var/cache"}]}}


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "generator"), **(env or {})))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    (tmp_path / "web/rootfs/bin").mkdir(parents=True)
    (tmp_path / "web/manifest").write_text(json.dumps(IMAGE))
    (tmp_path / "bare/bin").mkdir(parents=True)
    manifest = tmp_path / "manifest"
    manifest.write_text(json.dumps({**IMAGE, "name": "example.com/tools:2"}))
    with tarfile.open(tmp_path / "tools.aci", "w:gz") as tar:
        tar.add(manifest, "manifest")
        tar.add(tmp_path / "bare", "rootfs")
    (tmp_path / "data").mkdir()
    return tmp_path


def test_the_command_line_reaches_run_pod_with_its_manifest_and_images(images: Path, monkeypatch):
    seen = {}

    def run_pod(**kwargs):
        seen.update(kwargs)
        return 7

    monkeypatch.setattr(pod_commands, "run_pod", run_pod)
    monkeypatch.setattr(pod_commands, "_stage1", lambda opts: None)
    monkeypatch.setattr(pod_commands, "check_boot_files", lambda *args: None)  # a stand-in stage1
    monkeypatch.setattr(pod_commands, "host_runs_systemd", lambda: False)
    monkeypatch.chdir(images)
    status = main(["run", "--uuid", UUID, "--volume", "data,kind=host,source=data", "--memory", "300", "web",
                   "--mount", "volume=data,target=/srv", "---", "tools.aci", "--exec", "/bin/true", "---", "bare",
                   "--exec", "/bin/sh", "--", "-c", "exit 3"])
    assert status == 7
    document = json.loads(seen["manifest_bytes"])
    assert seen["pod_model"] == parse_pod_manifest(document)
    assert [a["name"] for a in document["apps"]] == ["web", "tools", "bare"]
    assert document["volumes"] == [{"name": "data", "kind": "host", "source": str(images / "data")}]
    assert document["apps"][2]["app"]["exec"] == ["/bin/sh", "-c", "exit 3"]
    assert seen["images"] == {"web": str(images / "web"), "tools": str(images / "tools.aci"),
                              "bare": str(images / "bare")}
    assert seen["pod_uuid"] == UUID


def test_runs_network_step_stages_what_the_guest_and_apps_read_and_has_nothing_to_undo(images: Path, monkeypatch):
    """The step run_pod calls before the boot: host.net's files (--dns, --hostname; a network's
    networks.json) written into the pod's root by host.pods; teardown finds no net.json to undo."""
    from kvmpod.host.net.run_networks import GuestNetFiles, PodNet
    from kvmpod.host.pods.pod_dirs import pod_dir

    seen = {}
    monkeypatch.setattr(pod_commands, "run_pod", lambda **kwargs: seen.update(kwargs) or 0)
    monkeypatch.setattr(pod_commands, "_stage1", lambda opts: None)
    monkeypatch.setattr(pod_commands, "check_boot_files", lambda *args: None)
    monkeypatch.setattr(pod_commands, "host_runs_systemd", lambda: False)
    monkeypatch.chdir(images)
    assert main(["run", "--uuid", UUID, "--net", "none", "--dns", "192.0.2.53", "--hostname", "web1", "web"]) == 0
    pod = pod_dir(UUID, str(images / "pods"))
    root = Path(pod.rootfs)
    for etc in (root / "etc", root / "opt/stage2/web/rootfs/etc", root / "etc/kvmpod"):
        etc.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    seen["network_up"](pod, said.append)
    assert (root / "etc/hostname").read_bytes() == b"web1\n"
    assert b"nameserver 192.0.2.53" in (root / "etc/resolv.conf").read_bytes()
    assert (root / "opt/stage2/web/rootfs/etc/resolv.conf").read_bytes() == (root / "etc/resolv.conf").read_bytes()
    assert b"web1" in (root / "opt/stage2/web/rootfs/etc/hosts").read_bytes()
    assert not (root / "opt/stage2/web/rootfs/etc/hostname").exists()  # the guest's name, not the app's
    assert not (root / "etc/kvmpod/networks.json").exists() and said == []  # --net none: no NIC
    assert seen["network_down"](pod) == []  # no net.json: nothing to undo

    # With a network, its description for the guest lands in networks.json beside the manifest.
    nic = {"interface": "eth0", "mac": "02:00:00:00:00:01", "address": "10.77.0.2/24", "routes": []}
    monkeypatch.setattr(PodNet, "up", lambda self, path, rootfs, say: GuestNetFiles([nic]))
    seen["network_up"](pod, said.append)
    assert json.loads((root / "etc/kvmpod/networks.json").read_text()) == [nic]
    assert json.loads((root / "etc/kvmpod/pod.json").read_bytes()) == json.loads(seen["manifest_bytes"])


@pytest.mark.parametrize("args, stderr", [
    (["web", "--mount", "volume=nope,target=/x"],
     "kvmpod: --mount (app web): volume=nope: no such volume; add --volume nope,kind=host,source=PATH (or "
     "kind=empty) before the first image\n"),
    (["--volume", "data,kind=host,source=missing", "web"],
     "kvmpod: --volume data: source '{tmp}/missing' is not a directory on this host; create it or fix the path\n"),
    (["web", "web"], "kvmpod: image web: its app would be named 'web', as the app of image web; app names are "
                     "unique in a pod: give one of them --name NAME\n"),
    (["nothere.aci"], "kvmpod: image nothere.aci: does not exist; give an .aci file, an unpacked image directory "
                      "(manifest and rootfs/) or a root filesystem directory\n"),
    (["bare"], "kvmpod: image bare: is a directory without an image manifest, so it has no command to run; give "
               "it one with --exec CMD after the image\n"),
    (["--manifest", "pod.json", "web"], "kvmpod: --manifest: cannot be given with images: give either IMAGE "
                                        "[APP FLAGS] ... or --manifest POD --app NAME=IMAGE\n"),
    (["--exec", "/bin/x", "web"], "kvmpod: --exec: is an app flag and comes after its image: kvmpod run [POD "
                                  "FLAGS] IMAGE [APP FLAGS] [-- ARGS]\n"),
    (["--cpu", "1", "web"], "kvmpod: --cpu: is an app flag and comes after its image: kvmpod run [POD FLAGS] "
                            "IMAGE [APP FLAGS] [-- ARGS]\n"),
    (["--readonly-rootfs", "web"], "kvmpod: --readonly-rootfs: is an app flag and comes after its image: kvmpod "
                                   "run [POD FLAGS] IMAGE [APP FLAGS] [-- ARGS]\n"),
    ([], "kvmpod: IMAGE: give at least one image (kvmpod run [POD FLAGS] IMAGE [APP FLAGS] [-- ARGS] [--- IMAGE "
         "...]), or --manifest POD with --app NAME=IMAGE\n"),
])
def test_command_line_errors_exit_2_and_write_nothing(images: Path, args, stderr):
    env = {"KVMPOD_PODS_DIR": str(images / "pods")}
    proc = _cli("run", *args, env=env, cwd=images)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", stderr.replace("{tmp}", str(images)))
    assert not (images / "pods").exists()


def test_manifest_pods_refuse_the_command_lines_pod_flags(images: Path):
    (images / "pod.json").write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": []}))
    proc = _cli("run", "--manifest", "pod.json", "--set-env", "A=1", cwd=images,
                env={"KVMPOD_PODS_DIR": str(images / "pods")})
    assert (proc.returncode, proc.stderr) == (2, "kvmpod: --set-env: builds the pod manifest from images; with "
                                                 "--manifest, write it in the manifest\n")


def test_cat_manifest_prints_the_pods_manifest(tmp_path: Path):
    env = {"KVMPOD_PODS_DIR": str(tmp_path)}
    (tmp_path / UUID).mkdir()
    text = json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": []}, indent=2) + "\n"
    (tmp_path / UUID / "pod.json").write_text(text)
    assert _cli("cat-manifest", UUID, env=env).stdout == text
    other = "00000000-0000-4000-8000-000000000000"
    proc = _cli("cat-manifest", other, env=env)
    assert (proc.returncode, proc.stdout) == (2, "") and f"no pod {other}" in proc.stderr
    assert _cli("cat-manifest", "not-a-uuid", env=env).stderr.startswith("kvmpod: UUID:")
    (tmp_path / UUID / "pod.json").unlink()
    os.mkfifo(tmp_path / UUID / "pod.json")  # never blocks: the pod directory is read as untrusted
    proc = _cli("cat-manifest", UUID, env=env)
    assert proc.returncode == 2 and "is a FIFO" in proc.stderr


def test_container_images_come_from_the_store_and_the_pod_records_them(tmp_path: Path, monkeypatch):
    """docker-archive: and oci: through the store (unpacked once); the pod directory lists their digests
    before the apps are installed, so kvmpod image gc keeps them while the pod runs."""
    from kvmpod.host.images.oci_writer import write_docker_archive, write_oci_layout
    from kvmpod.host.images.store import images_in_use
    from kvmpod.host import run as runner

    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nweb:x:1000:1000::/:/bin/sh\n")
    config = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id"], "Env": ["PATH=/bin"], "User": "web",
              "WorkingDir": "/srv", "Volumes": {"/data": {}}}
    archive_id = write_docker_archive(str(root), config, str(tmp_path / "web.tar"), "example.com/web:1.0")
    layout_digest = write_oci_layout(str(root), {**config, "Cmd": ["true"]}, str(tmp_path / "layout"), ref="2")
    monkeypatch.setenv("KVMPOD_IMAGES_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("KVMPOD_PODS_DIR", str(tmp_path / "pods"))
    seen = {}

    def install_app(root, app, image, field=None):
        # install_app(root, ...) copies; as root, app_root.mount_store_app(pod, ...) overlays a stored image
        pod = os.path.dirname(os.path.dirname(root)) if isinstance(root, str) else root.path  # <pod>/stage1/rootfs
        seen["in_use"] = images_in_use([pod])
        seen["manifest"] = json.loads(Path(pod, "pod.json").read_text())
        seen.setdefault("images", []).append(image)
        raise RuntimeError("stop here: no boot in a unit test")

    (tmp_path / "stage1root/etc").mkdir(parents=True)
    monkeypatch.setattr(runner, "install_app", install_app)
    monkeypatch.setattr(runner.app_root, "mount_store_app", install_app)
    monkeypatch.setattr(pod_commands, "_stage1", lambda opts: runner.Stage1(str(tmp_path / "stage1root"), "", None))
    monkeypatch.setattr(pod_commands, "check_boot_files", lambda *args: None)  # a stand-in stage1
    monkeypatch.setattr(pod_commands, "host_runs_systemd", lambda: False)
    status = main(["run", "--uuid", UUID, f"docker-archive:{tmp_path}/web.tar", "--set-env", "X=1", "---",
                   f"oci:{tmp_path}/layout:2"])
    assert status == 2  # the RuntimeError above, reported as one line
    web, layout = seen["manifest"]["apps"]
    assert (web["name"], web["image"]["id"]) == ("web", archive_id)
    assert web["app"]["exec"] == ["/bin/sh", "-c", "id"] and web["app"]["workingDirectory"] == "/srv"
    assert {"name": "X", "value": "1"} in web["app"]["environment"]
    assert [mp["path"] for mp in web["app"]["mountPoints"]] == ["/data"]
    assert layout["image"]["id"] == layout_digest and layout["app"]["exec"] == ["/bin/sh", "-c", "true"]
    assert sorted(seen["in_use"]) == sorted([archive_id, layout_digest])
    assert os.path.isfile(os.path.join(seen["images"][0], "manifest"))
    assert not (tmp_path / "pods" / UUID).exists()  # nothing half-made stays
