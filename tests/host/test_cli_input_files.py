"""Issue 22, host input: the files a host command is given (--manifest, --networks, --cni-result) are
read as the guest reads its files (kvmpod.pod.files: non-blocking, regular files only, size-capped),
so a FIFO or a device is an error naming the option, never a hang; a pod with no apps and a resource
isolator with an empty request or limit are refused by every host command, naming the field.
Real processes, real files: a hang would show as the subprocess timeout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.pod.files import MAX_FILE_BYTES, read_input_file
from kvmpod.pod.problems import InvalidInput

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "generator"))
UUID = "6f1c2d6e-4b53-4d39-9a8e-0d1c5a7b3e21"
COMMANDS = ["stage", "explain", "args", "run-rootfs", "run-app"]


def manifest(apps=None, isolators=()) -> dict:
    app = {"exec": ["/bin/web"], "user": "0", "group": "0",
           "isolators": [{"name": n, "value": v} for n, v in isolators]}
    return {"acKind": "PodManifest", "acVersion": "0.8.11",
            "apps": [{"name": "web", "app": app}] if apps is None else apps, "volumes": []}


def kvmpod(tmp_path: Path, command: str, pod: Path, *extra: str) -> subprocess.CompletedProcess:
    rootfs = tmp_path / "stage1"
    (rootfs / "opt/stage2/web/rootfs").mkdir(parents=True, exist_ok=True)
    (rootfs / "vmlinuz").write_text("")
    argv = ["--manifest", str(pod), *extra]
    if command == "stage":
        argv = ["stage", *argv, "--rootfs", str(rootfs)]
    elif command in ("explain", "args"):
        argv = [command, *argv, "--rootfs", str(rootfs), "--hypervisor", "qemu", "--accel", "tcg", "--uuid", UUID]
    elif command == "run-rootfs":
        argv = ["run", *argv, "--rootfs", str(rootfs), "--hypervisor", "qemu", "--accel", "tcg", "--uuid", UUID]
    else:  # kvmpod run --app: must refuse before it makes a pod directory or builds a stage1
        argv = ["run", *argv, "--app", f"web={rootfs}", "--stage1", str(tmp_path / "no-stage1")]
    env = dict(ENV, KVMPOD_PODS_DIR=str(tmp_path / "pods"))
    return subprocess.run([sys.executable, "-I", "-m", "kvmpod.host.cli", *argv], capture_output=True, text=True,
                          timeout=60, env=env)


def assert_refused(result: subprocess.CompletedProcess, tmp_path: Path, *words: str) -> None:
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert all(line.startswith("kvmpod: ") for line in result.stderr.splitlines()), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not (tmp_path / "stage1/etc").exists()  # nothing staged
    assert not (tmp_path / "pods").exists() or not os.listdir(tmp_path / "pods")  # no pod directory


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("option", ["--manifest", "--networks", "--cni-result"])
def test_a_fifo_given_as_an_input_file_is_an_error_not_a_hang(tmp_path, command, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody ever writes it: a blocking open() would hang until the timeout
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(manifest()))
    if option == "--manifest":
        result = kvmpod(tmp_path, command, fifo)
    else:
        result = kvmpod(tmp_path, command, pod, option, str(fifo))
    assert_refused(result, tmp_path, f"{option} '{fifo}': is a FIFO; it must be a regular UTF-8 file of at most 4 MiB")


@pytest.mark.parametrize("path,kind", [("/dev/zero", "a character device"), ("/dev/null", "a character device"),
                                       ("/", "a directory")])
def test_a_device_or_a_directory_as_the_manifest_is_refused(tmp_path, path, kind):
    assert_refused(kvmpod(tmp_path, "args", Path(path)), tmp_path, f"--manifest '{path}': is {kind}")


def test_a_missing_or_too_large_input_file_is_refused_naming_the_option(tmp_path):
    assert_refused(kvmpod(tmp_path, "stage", tmp_path / "nope.json"), tmp_path,
                   f"--manifest: '{tmp_path / 'nope.json'}' does not exist")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(manifest()))
    assert_refused(kvmpod(tmp_path, "args", pod, "--networks", str(big)), tmp_path,
                   f"--networks '{big}': is too large")


def test_the_shared_reader_reads_a_regular_file_once_and_whole(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * MAX_FILE_BYTES)
    assert read_input_file(str(path), "--set-env-file") == b"x" * MAX_FILE_BYTES
    with pytest.raises(InvalidInput) as error:
        read_input_file(str(tmp_path), "--set-env-file")
    assert str(error.value).startswith(f"--set-env-file '{tmp_path}': is a directory")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_pod_with_no_apps_is_refused_by_every_host_command(tmp_path, command):
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(manifest(apps=[])))
    assert_refused(kvmpod(tmp_path, command, pod), tmp_path,
                   "kvmpod: apps: is empty: a pod must contain at least one application")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("isolator,field", [
    (("resource/cpu", {"request": "", "limit": "1"}), "value.request"),
    (("resource/cpu", {"limit": ""}), "value.limit"),
    (("resource/memory", {"request": ""}), "value.request"),
    (("resource/memory", {"request": "64Mi", "limit": ""}), "value.limit"),
])
def test_an_empty_resource_request_or_limit_is_refused_as_appc_refuses_it(tmp_path, command, isolator, field):
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps(manifest(isolators=[isolator])))
    assert_refused(kvmpod(tmp_path, command, pod), tmp_path, f"apps[0].app.isolators[0].{field}: '' is not a quantity")
