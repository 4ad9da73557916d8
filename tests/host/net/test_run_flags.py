"""kvmpod run's network flags on the command line: refused before anything is written or built."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GENERATOR = str(Path(__file__).resolve().parents[3] / "generator")


def run(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "web", "app": {"exec": ["/bin/sh"], "user": "0", "group": "0",
                                "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}}]}))
    (tmp_path / "web").mkdir(exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": GENERATOR, "KVMPOD_PODS_DIR": str(tmp_path / "pods"),
                "KVMPOD_NET_DIR": str(tmp_path / "net.d"), "KVMPOD_E2E_CACHE": str(tmp_path / "no-cache"),
                **(env or {})}
    full_env.pop("KVMPOD_NET", None)
    return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(manifest),
                           "--app", f"web={tmp_path / 'web'}", "--stage1", str(tmp_path / "no-stage1"), *args],
                          env=full_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (["--net", "nosuch"], "kvmpod: --net: no network 'nosuch'"),
    (["--net", "none,default"], "--net: \"none\" means only loopback"),
    (["--net", "host"], "--net: \"host\""),
    (["--port", "http"], "--port: 'http': give NAME:HOSTPORT"),
    (["--dns", "banana"], "--dns: 'banana' is not a nameserver address"),
    (["--hostname", "bad name"], "--hostname: 'bad name' is not a host name"),
])
def test_bad_network_flags_are_refused_before_anything_is_written(tmp_path: Path, args, words):
    proc = run(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pods").exists()


def test_a_hostile_configuration_file_is_named(tmp_path: Path):
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-x.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "macvlan",
                                                              "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}))
    proc = run(tmp_path, "--net", "x")
    assert proc.returncode == 2 and "10-x.conf: type: 'macvlan'" in proc.stderr, proc.stderr


def test_net_flags_with_a_prepared_tree_or_caller_made_networks_are_refused(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "run", "--manifest", str(tmp_path / "m"),
                           "--rootfs", str(tmp_path), "--uuid", "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e",
                           "--net", "default"], env={**os.environ, "PYTHONPATH": GENERATOR},
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--net" in proc.stderr, proc.stderr
    networks = tmp_path / "n.json"
    networks.write_text(json.dumps([{"tap": "t0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24}]))
    proc = run(tmp_path, "--networks", str(networks), "--uuid", "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e",
               "--port", "http:8080")
    assert proc.returncode == 2 and "--port: cannot be given with --networks" in proc.stderr, proc.stderr
