"""`kvmpod run` of container images with rkt's command line, end to end: one boot ("run-images").

One pod, three apps, typed as a user types them (no manifest):

    kvmpod run --volume out,kind=host,source=OUT --volume data,kind=host,source=DATA,readOnly=true \
        --set-env POD=pod-wide --mount volume=out,target=/out \
        docker-archive:web.tar \
        --- docker-archive:web.tar --name other --exec /bin/sh --user 0 --set-env GREETING=override \
            --mount volume=data,target=/data -- -c SCRIPT \
        --- oci:layout:2

- `web` runs the docker-archive's own Entrypoint+Cmd, Env, User (a name in the image's /etc/passwd),
  WorkingDir (missing from the image: made) and gets an implicit empty volume for its Volume /data;
- `other` is the same image with --exec, --set-env, --user and a --mount on the image's Volume (the
  host directory, not an implicit volume);
- `layout` (an OCI layout) runs its own entrypoint and exits 5: kvmpod run's exit status. It waits
  for the host's go-ahead, so the pod is running while the test runs `kvmpod image gc`, which must
  keep the pod's images and remove an unused one.
The docker-archive is fetched before the run (`kvmpod image fetch`): the run says it is already in
the store and unpacks nothing. `kvmpod cat-manifest` prints the manifest the pod ran with.

Every kvmpod command here is the INSTALLED kvmpod, not this checkout: packaging/build-deb's .deb
unpacked with `dpkg-deb -x` into a root of its own (what dpkg installs, without touching this
machine's /usr, which other test runs share), run as its /usr/bin/kvmpod. `kvmpod stage1 build`
from there makes the stage1 from the installed files (host.images.installed_tree), and the pod boots
it: an installed kvmpod runs a pod by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from kvmpod.host.images.oci_writer import write_docker_archive, write_oci_layout

from .conftest import module_boot
from .kvmpod_guest import HOST_NETWORK_SAFE, REPO, busybox_rootfs, kept_dir, pod_uuid
from .test_run import RUN_TIMEOUT, RunState, _finish

pytestmark = pytest.mark.e2e

WEB_SCRIPT = ('{ id -u; id -g; pwd; echo "$GREETING"; echo "$POD"; '
              'grep -q " /data " /proc/self/mountinfo && echo data-mounted; } > /out/web.txt 2>&1')
OTHER_SCRIPT = '{ id -u; pwd; echo "$GREETING"; echo "$POD"; cat /data/host-file; } > /out/other.txt 2>&1'
LAYOUT_SCRIPT = ("i=0; while [ ! -e /out/go ] && [ $i -lt 900 ]; do sleep 1; i=$((i+1)); done; "
                 "echo layout saw go; exit 5")


def install_deb(dest: Path) -> Path:
    """packaging/build-deb's .deb unpacked into dest/root; its /usr/bin/kvmpod."""
    proc = subprocess.run([str(REPO / "packaging/build-deb"), str(dest / "deb")], capture_output=True, text=True,
                          check=True)
    subprocess.run(["dpkg-deb", "-x", proc.stdout.strip(), str(dest / "root")], check=True)
    return dest / "root/usr/bin/kvmpod"


def installed(kvmpod: Path, *args: str, env: dict[str, str], **popen: object) -> subprocess.Popen:
    """The installed kvmpod, with nothing of this checkout on its path (its launcher runs python3 -I
    and imports the package beside it). Nor has it a PYTHONPATH: its children (`python3 -m
    kvmpod.host.hypervisor.supervisor`) find this copy, unpacked outside /usr, from what it exports
    to them (host.hypervisor.launch.children_import_this_kvmpod)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.Popen([str(kvmpod), *args], env={**full_env, **HOST_NETWORK_SAFE, **env}, **popen)


def installed_run(kvmpod: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = installed(kvmpod, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"installed kvmpod {' '.join(args)} exited {proc.returncode}: {err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@dataclass
class ImagesState(RunState):
    LABEL: ClassVar[str] = "run-images"
    fetch_stderr: str = ""
    gc_stdout: str = ""
    listed_during_run: str = ""
    manifest_printed: str = ""
    digests: dict | None = None
    kvmpod: Path | None = None
    stage1_stdout: str = ""
    stage1_stderr: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {"KVMPOD_PODS_DIR": str(self.logs / "pods"), "KVMPOD_IMAGES_DIR": str(self.logs / "store")}

    def output_dir(self) -> Path | None:
        return self.vols.get("out")


def _image_root(dest: Path) -> Path:
    root = busybox_rootfs(dest, ("sh", "id", "pwd", "cat", "grep", "sleep", "echo"))
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001:web:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nwebgrp:x:1001:\n")
    return root


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(1)


def _run_images(state: ImagesState, tmp: Path) -> Iterator[None]:
    state.pods = state.logs / "pods"
    state.uuid = pod_uuid()
    state.install = "the stage1 the installed kvmpod built from its installed files"
    state.kvmpod = install_deb(state.logs / "installed")
    built = installed_run(state.kvmpod, "stage1", "build", env=state.env)
    state.stage1_stdout, state.stage1_stderr = built.stdout, built.stderr
    out, data = state.logs / "out", state.logs / "data"
    out.mkdir(parents=True)
    out.chmod(0o777)  # the web app writes as uid 1000
    data.mkdir()
    (data / "host-file").write_text("from the host\n")
    state.vols = {"out": out, "data": data}
    images = state.logs / "images"
    root = _image_root(images / "rootfs")
    web_config = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": [WEB_SCRIPT], "Env": ["PATH=/bin", "GREETING=from-image"],
                  "User": "web", "WorkingDir": "/srv/www", "Volumes": {"/data": {}}}
    archive = images / "web.tar"
    state.digests = {"web": write_docker_archive(str(root), web_config, str(archive), "example.com/web:1.0")}
    state.digests["layout"] = write_oci_layout(str(root), {"Entrypoint": ["/bin/sh", "-c", LAYOUT_SCRIPT],
                                                           "Env": ["PATH=/bin"]}, str(images / "layout"), ref="2")
    state.digests["unused"] = write_oci_layout(str(root), {"Cmd": ["/bin/true"]}, str(images / "unused"))
    fetched = installed_run(state.kvmpod, "image", "fetch", f"docker-archive:{archive}", f"oci:{images / 'unused'}", env=state.env)
    state.fetch_stderr = fetched.stderr
    args = ["run", "--uuid", state.uuid,
            "--volume", f"out,kind=host,source={out}", "--volume", f"data,kind=host,source={data},readOnly=true",
            "--set-env", "POD=pod-wide", "--mount", "volume=out,target=/out",
            f"docker-archive:{archive}",
            "---", f"docker-archive:{archive}", "--name", "other", "--exec", "/bin/sh", "--user", "0",
            "--set-env", "GREETING=override", "--mount", "volume=data,target=/data", "--", "-c", OTHER_SCRIPT,
            "---", f"oci:{images / 'layout'}:2"]
    started = time.monotonic()
    proc = installed(state.kvmpod, *args, env=state.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The pod runs until the host says go: gc now must keep its images.
        _wait_for([out / "web.txt", out / "other.txt"], proc, RUN_TIMEOUT)
        if proc.poll() is None:
            # an image unused for 0 s is old enough: only "in use" keeps one
            state.gc_stdout = installed_run(state.kvmpod, "image", "gc", "--older-than", "0s", env=state.env).stdout
            state.listed_during_run = installed_run(state.kvmpod, "image", "list", "--full", env=state.env).stdout
            state.manifest_printed = installed_run(state.kvmpod, "cat-manifest", state.uuid, env=state.env).stdout
    finally:
        (out / "go").write_text("")
        _finish(state, proc)
    state.seconds = time.monotonic() - started
    yield


@pytest.fixture(scope="module")
def run_images(request: pytest.FixtureRequest):
    yield from module_boot(request, ImagesState(logs=kept_dir("run-images")), _run_images)


def test_exit_status_is_the_images_own(run_images: ImagesState) -> None:
    run_images.require()
    assert run_images.rc == 5, run_images.where()
    assert ("layout", "layout saw go") in run_images.app_lines(), run_images.where()


def test_docker_archive_runs_with_its_entrypoint_env_user_and_working_dir(run_images: ImagesState) -> None:
    run_images.require()
    assert run_images.read("web.txt").splitlines() == ["1000", "1001", "/srv/www", "from-image", "pod-wide",
                                                       "data-mounted"], run_images.where()


def test_exec_set_env_user_and_mount_override_the_image(run_images: ImagesState) -> None:
    run_images.require()
    assert run_images.read("other.txt").splitlines() == ["0", "/srv/www", "override", "pod-wide", "from the host"], \
        run_images.where()


def test_image_volume_is_implicit_unless_mounted(run_images: ImagesState) -> None:
    run_images.require()
    manifest = json.loads((run_images.pods / run_images.uuid / "pod.json").read_text())
    web, other, layout = manifest["apps"]
    assert [a["name"] for a in manifest["apps"]] == ["web", "other", "layout"]
    assert [mp["path"] for mp in web["app"]["mountPoints"]] == ["/data"]
    assert [m["volume"] for m in web["mounts"]] == ["out"]  # /data: the guest's implicit volume (web.txt says mounted)
    assert {"volume": "data", "path": "/data"} in other["mounts"]


def test_the_second_use_of_an_image_unpacks_nothing(run_images: ImagesState) -> None:
    run_images.require()
    assert "unpacking" in run_images.fetch_stderr
    web = run_images.digests["web"]
    assert f"already in the store ({web})" in run_images.stderr, run_images.where()
    assert run_images.stderr.count("unpacking") == 1, run_images.where()  # the OCI layout only


def test_image_gc_keeps_a_running_pods_images(run_images: ImagesState) -> None:
    run_images.require()
    digests = run_images.digests
    assert f"removed {digests['unused']}" in run_images.gc_stdout, run_images.gc_stdout
    for name in ("web", "layout"):
        assert f"kept {digests[name]}" in run_images.gc_stdout, run_images.gc_stdout
        assert digests[name] in run_images.listed_during_run
    assert digests["unused"] not in run_images.listed_during_run


def test_cat_manifest_prints_what_the_pod_ran_with(run_images: ImagesState) -> None:
    run_images.require()
    assert run_images.manifest_printed == (run_images.pods / run_images.uuid / "pod.json").read_text()
    assert os.path.getsize(run_images.pods / run_images.uuid / "pod.json") > 0


def test_the_installed_kvmpod_built_its_stage1_from_its_installed_files(run_images: ImagesState) -> None:
    run_images.require()
    root = run_images.kvmpod.parents[2]
    entry = Path(run_images.stage1_stdout.strip())
    info = json.loads((entry / "build-info.json").read_text())
    # InstalledTree.name: an installed prefix, not a .deb. The entry is addressed by the installed
    # files' content, so an earlier run of the same files (another kept-logs directory) may have built
    # it: the prefix it names is that run's; the files below show it is these.
    assert info["deb"].endswith("/root/usr") and not info["deb"].endswith(".deb"), info
    guest = entry / "root/usr/lib/python3/dist-packages/kvmpod"
    host = root / "usr/lib/python3/dist-packages/kvmpod"
    for module in ("guest/generator.py", "host/pods/prerendered_units.py", "pod/manifest.py"):
        assert (guest / module).read_bytes() == (host / module).read_bytes()
    assert (entry / "root/usr/lib/systemd/system-generators/kvmpod-generator").read_bytes() == \
        (root / "usr/lib/systemd/system-generators/kvmpod-generator").read_bytes()
    assert any((guest / "guest/__pycache__").glob("generator.cpython-*.pyc"))  # compiled in the root
    assert f"pod {run_images.uuid}" in run_images.stderr and run_images.rc == 5, run_images.where()
