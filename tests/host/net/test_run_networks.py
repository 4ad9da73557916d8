"""kvmpod run's networks from its flags (host/net/run_networks.py): refused before anything is written,
then set up for real inside a network namespace of the test's own, the guest's files given back as data."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.net.run_networks import GuestNetFiles, PodNet
from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.problems import InvalidInput

GENERATOR = str(Path(__file__).resolve().parents[3] / "generator")
UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"
IMAGE = {"name": "example.com/web", "id": "sha512-" + "0" * 128}
MANIFEST = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
    {"name": "web", "image": IMAGE, "app": {"exec": ["/bin/httpd"], "user": "0", "group": "0",
                                            "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}}]}


def options(**given) -> argparse.Namespace:
    opts = {"net": None, "port": None, "dns": None, "dns_search": None, "hostname": None}
    opts.update(given)
    return argparse.Namespace(**opts)


def fields(error: pytest.ExceptionInfo) -> list[str]:
    return [p.field for p in error.value.problems]


@pytest.fixture(autouse=True)
def no_default_net(monkeypatch, tmp_path):
    monkeypatch.delenv("KVMPOD_NET", raising=False)
    monkeypatch.setenv("KVMPOD_NET_DIR", str(tmp_path / "net.d"))  # no file: rkt's built-in networks only


def test_networks_made_by_the_caller_refuse_net_and_port_and_need_nothing_else():
    pod = parse_pod_manifest(MANIFEST)
    for flag, given in (("--net", {"net": ["default"]}), ("--port", {"port": ["http:8080"]})):
        with pytest.raises(InvalidInput) as error:
            PodNet.from_options(options(**given), pod, UUID, external=True)
        assert fields(error) == [flag] and "--networks/--cni-result" in str(error.value.problems[0])
    assert PodNet.from_options(options(), pod, UUID, external=True) is None
    named = PodNet.from_options(options(hostname="web1"), pod, UUID, external=True)
    assert named is not None and named.configs == [] and named.requests == []


@pytest.mark.parametrize("given, field", [
    ({"net": ["none"], "port": ["http:8080"]}, "--port"),  # nothing to forward to
    ({"dns": ["not an address"]}, "--dns"),
    ({"dns_search": ["bad domain!"]}, "--dns-search"),
    ({"hostname": "-bad-"}, "--hostname"),
    ({"net": ["nosuchnet"]}, "--net"),
])
def test_bad_flags_are_named_before_anything_is_written(given, field, tmp_path):
    with pytest.raises(InvalidInput) as error:
        PodNet.from_options(options(**given), parse_pod_manifest(MANIFEST), UUID, external=False)
    assert fields(error)[0] == field
    assert os.listdir(tmp_path) == []  # not even net.d


def test_without_a_network_up_gives_the_guests_and_apps_files_and_sets_nothing_up(tmp_path):
    net = PodNet.from_options(options(net=["none"], dns=["192.0.2.53"], dns_search=["example.com"],
                                      hostname="web1"), parse_pod_manifest(MANIFEST), UUID, external=False)
    said: list[str] = []
    (tmp_path / "pod/rootfs").mkdir(parents=True)
    files = net.up(str(tmp_path / "pod"), str(tmp_path / "pod/rootfs"), said.append)
    assert files.description is None and said == [] and net.networks == ()
    assert files.guest_files["resolv.conf"] == files.app_files["resolv.conf"]
    assert b"nameserver 192.0.2.53\n" in files.guest_files["resolv.conf"]
    assert b"search example.com\n" in files.guest_files["resolv.conf"]
    assert files.guest_files["hostname"] == b"web1\n" and "hostname" not in files.app_files
    assert b"web1" in files.guest_files["hosts"] and files.app_files["hosts"] == files.guest_files["hosts"]
    assert sorted(os.listdir(tmp_path / "pod")) == ["rootfs"]  # no net.json: nothing to undo
    assert sorted(os.listdir(tmp_path / "pod/rootfs")) == []  # and nothing staged here: the caller stages
    assert PodNet.from_options(options(net=["none"]), parse_pod_manifest(MANIFEST), UUID,
                               external=False).up(str(tmp_path / "pod"), "", said.append) == GuestNetFiles()


REAL_UP = r"""
import argparse, json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from kvmpod.host.net import pod_network
from kvmpod.host.net.run_networks import PodNet
from kvmpod.pod.manifest import parse_pod_manifest
pod_path, manifest, uuid = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
opts = argparse.Namespace(net=["testnet"], port=["http:18080"], dns=None, dns_search=None, hostname="web1")
net = PodNet.from_options(opts, parse_pod_manifest(manifest), uuid, external=False)
said = []
files = net.up(pod_path, os.path.join(pod_path, "rootfs"), said.append)
out = {"description": files.description, "guest": sorted(files.guest_files), "apps": sorted(files.app_files),
       "said": said, "recorded": pod_network.recorded_addresses(pod_path),
       "held": [s.getsockname()[1] for s in net.sockets], "taps": [n.tap for n in net.networks]}
out["problems"] = pod_network.teardown(pod_path)
out["after"] = pod_network.recorded_addresses(pod_path)
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None
                    or not os.access("/usr/lib/cni/host-local", os.X_OK),
                    reason="needs root, nft and containernetworking-plugins")
def test_up_sets_the_network_up_and_gives_its_description_for_the_guest(tmp_path):
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "10-testnet.conf").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "testnet", "type": "ptp", "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": str(tmp_path / "ipam"),
                 "routes": [{"dst": "0.0.0.0/0"}]}}))
    (tmp_path / "pod/rootfs").mkdir(parents=True)
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", REAL_UP, GENERATOR, str(tmp_path / "pod"),
                           json.dumps(MANIFEST), UUID], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KVMPOD_NET_DIR": str(net_d)})
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    [nic] = r["description"]
    assert nic["interface"] == "eth0" and nic["address"].startswith("10.77.0.") and nic["address"].endswith("/24")
    assert nic["gateway"] == "10.77.0.1" and nic["routes"] == []  # the route to 0.0.0.0/0 is the gateway
    assert r["guest"] == ["hostname", "hosts"] and r["apps"] == ["hosts"]
    assert r["said"][-1] == f"networks: testnet {nic['address']} on eth0 (host {r['taps'][0]})"
    recorded = [(a["network"], a["address"], a["tap"]) for a in r["recorded"]]
    assert recorded == [("testnet", nic["address"], r["taps"][0])]
    assert r["held"] == [18080]  # the forwarded host port, held until the pod ends
    assert r["problems"] == [] and r["after"] == []
