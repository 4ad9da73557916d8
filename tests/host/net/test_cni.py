"""The CNI protocol against Debian's real plugins (host-local with a private dataDir), and results."""

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest

from kvmpod.host.net import cni

HOST_LOCAL = "/usr/lib/cni/host-local"
needs_plugins = pytest.mark.skipif(not os.access(HOST_LOCAL, os.X_OK), reason="containernetworking-plugins "
                                                                               "is not installed")
UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"


def conf(data_dir: Path, version: str = "1.0.0", **ipam) -> dict:
    return {"cniVersion": version, "name": "testnet", "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": str(data_dir), **ipam}}


def reservations(data_dir: Path) -> dict[str, str]:
    net = data_dir / "testnet"
    return {p.name: p.read_text() for p in net.iterdir() if p.name[0].isdigit()} if net.is_dir() else {}


@needs_plugins
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_add_check_del_with_host_local(tmp_path: Path, version: str):
    c = conf(tmp_path, version)
    raw = cni.invoke("ADD", c, container_id=UUID, ifname="eth0", cni_args="IgnoreUnknown=1")
    result = cni.parse_ipam_result(raw)
    assert result.address == ipaddress.IPv4Interface("10.77.0.2/24")
    assert result.gateway == ipaddress.IPv4Address("10.77.0.1")
    assert result.routes == ((ipaddress.IPv4Network("0.0.0.0/0"), None),)
    # host-local's store: the address's file names the container and its interface
    assert reservations(tmp_path) == {"10.77.0.2": f"{UUID}\r\neth0"} or \
        reservations(tmp_path) == {"10.77.0.2": f"{UUID}\neth0"}
    assert cni.invoke("CHECK", {**c, "prevResult": raw}, container_id=UUID, ifname="eth0") is None
    second = cni.parse_ipam_result(cni.invoke("ADD", c, container_id="other", ifname="eth0"))
    assert second.address.ip == ipaddress.IPv4Address("10.77.0.3")
    assert cni.invoke("DEL", c, container_id=UUID, ifname="eth0") is None
    assert list(reservations(tmp_path)) == ["10.77.0.3"]
    cni.invoke("DEL", c, container_id=UUID, ifname="eth0")  # a second DEL releases nothing and is no error
    assert list(reservations(tmp_path)) == ["10.77.0.3"]


@needs_plugins
def test_cni_args_reach_the_plugin(tmp_path: Path):
    raw = cni.invoke("ADD", conf(tmp_path), container_id=UUID, ifname="eth0", cni_args="IgnoreUnknown=1;IP=10.77.0.42")
    assert cni.parse_ipam_result(raw).address == ipaddress.IPv4Interface("10.77.0.42/24")


@needs_plugins
def test_check_fails_for_a_reservation_that_is_gone(tmp_path: Path):
    c = conf(tmp_path)
    raw = cni.invoke("ADD", c, container_id=UUID, ifname="eth0")
    cni.invoke("DEL", c, container_id=UUID, ifname="eth0")
    with pytest.raises(cni.CNIError) as error:
        cni.invoke("CHECK", {**c, "prevResult": raw}, container_id=UUID, ifname="eth0")
    assert "CHECK by host-local" in str(error.value)


@needs_plugins
def test_plugin_errors_carry_the_cni_error(tmp_path: Path):
    with pytest.raises(cni.CNIError) as error:
        cni.invoke("ADD", conf(tmp_path, subnet="10.77.0.0/33"), container_id=UUID, ifname="eth0")
    assert "invalid CIDR address" in str(error.value) and error.value.command == "ADD"
    small = conf(tmp_path, subnet="10.78.0.0/30")
    cni.invoke("ADD", small, container_id="a", ifname="eth0")
    with pytest.raises(cni.CNIError) as error:
        cni.invoke("ADD", small, container_id="b", ifname="eth0")  # /30: one address for pods
    assert "no IP addresses available" in str(error.value)


def test_environment_and_stdin_as_the_spec_says(tmp_path: Path, monkeypatch):
    plugin = tmp_path / "fake-ipam"
    plugin.write_text("#!/bin/sh\nenv | grep ^CNI_ | sort > \"$0.env\"\ncat > \"$0.stdin\"\n"
                      "echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.9.0.5/24\",\"gateway\":\"10.9.0.1\"}]}'\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CNI_STALE", "from the caller")
    c = {"cniVersion": "1.0.0", "name": "n", "type": "ptp", "ipam": {"type": "fake-ipam"}}
    raw = cni.invoke("ADD", c, container_id=UUID, ifname="eth1", cni_args="IgnoreUnknown=1;A=b", path=str(tmp_path))
    assert cni.parse_ipam_result(raw).address.ip == ipaddress.IPv4Address("10.9.0.5")
    env = dict(line.split("=", 1) for line in (tmp_path / "fake-ipam.env").read_text().splitlines())
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": UUID, "CNI_NETNS": "/proc/self/ns/net",
                   "CNI_IFNAME": "eth1", "CNI_ARGS": "IgnoreUnknown=1;A=b", "CNI_PATH": str(tmp_path)}
    assert json.loads((tmp_path / "fake-ipam.stdin").read_text()) == c


def test_a_plugin_that_is_not_there_or_says_nonsense(tmp_path: Path):
    c = {"cniVersion": "1.0.0", "name": "n", "type": "ptp", "ipam": {"type": "nothere"}}
    with pytest.raises(cni.CNIError) as error:
        cni.invoke("ADD", c, container_id=UUID, ifname="eth0", path=str(tmp_path))
    assert "containernetworking-plugins" in str(error.value)
    for name, script in [("silly", "echo not json"), ("failing", "echo oops >&2; exit 3")]:
        plugin = tmp_path / name
        plugin.write_text(f"#!/bin/sh\n{script}\n")
        plugin.chmod(0o755)
        with pytest.raises(cni.CNIError) as error:
            cni.invoke("ADD", {**c, "ipam": {"type": name}}, container_id=UUID, ifname="eth0", path=str(tmp_path))
        assert ("no JSON" if name == "silly" else "oops") in str(error.value)


def test_results_040_and_100():
    v040 = {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "fd00::2/64"},
                                           {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.1.0.53"], "search": ["example.test"]}}
    r = cni.parse_ipam_result(v040)
    assert (str(r.address), str(r.gateway), r.nameservers, r.search) == \
        ("10.1.0.2/24", "10.1.0.1", ("10.1.0.53",), ("example.test",))
    assert [(str(d), str(g) if g else None) for d, g in r.routes] == [("0.0.0.0/0", None), ("192.168.0.0/16", "10.1.0.254")]
    v100 = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}
    assert cni.parse_ipam_result(v100).gateway is None


@pytest.mark.parametrize("result, words", [
    ({"cniVersion": "0.2.0", "ip4": {}}, "cniVersion"),
    ({"cniVersion": "1.0.0"}, "no \"ips\""),
    ({"cniVersion": "1.0.0", "ips": [{"address": "fd00::2/64"}]}, "no IPv4"),
    ({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}]}, "version"),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}, "prefix") ,
    ({"cniVersion": "1.0.0", "ips": [{"address": "nope/24"}]}, "not an address"),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/31"}]}, "no room"),
    ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "routes": [{"gw": "x"}]}, "routes[0]"),
])
def test_bad_results(result, words):
    with pytest.raises(cni.CNIError) as error:
        cni.parse_ipam_result(result)
    assert words in str(error.value)
