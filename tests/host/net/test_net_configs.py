"""--net and the network configurations: rkt's built-ins, files, and hostile configurations."""

import json
from pathlib import Path

import pytest

from kvmpod.host.net.net_configs import (BUILT_IN, DEFAULT, DEFAULT_RESTRICTED, NetRequest, load_configs, net_dir,
                                         parse_net_flag)
from kvmpod.pod.problems import InvalidInput


def fields(error: pytest.ExceptionInfo) -> list[str]:
    return [p.field for p in error.value.problems]


def messages(error: pytest.ExceptionInfo) -> str:
    return "\n".join(f"{p.field}: {p.message}" for p in error.value.problems)


def write(directory: Path, name: str, document: object) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_net_flag_as_rkt_read_it():
    assert parse_net_flag(None) == [NetRequest("default")]
    assert parse_net_flag(["none"]) == []
    assert parse_net_flag(["default,mynet"]) == [NetRequest("default"), NetRequest("mynet")]
    assert parse_net_flag(["default", "b"]) == [NetRequest("default"), NetRequest("b")]
    request = parse_net_flag(["mynet:IP=10.1.2.3;FOO=bar"])[0]
    assert request.args == (("IP", "10.1.2.3"), ("FOO", "bar"))
    assert request.cni_args() == "IgnoreUnknown=1;IP=10.1.2.3;FOO=bar"
    assert NetRequest("default").cni_args() == "IgnoreUnknown=1"


@pytest.mark.parametrize("value, words", [
    ("none,default", "give it alone"),
    ("host", "cannot"),
    ("../x", "give a network name"),
    ("a:noequals", "KEY=VALUE"),
    ("a,a", "given twice"),
    ("", "give a network name"),
])
def test_net_flag_refusals(value, words):
    with pytest.raises(InvalidInput) as error:
        parse_net_flag([value])
    assert fields(error) == ["--net"] and words in messages(error)


def test_rkt_defaults_when_no_file_names_them(tmp_path: Path):
    default, restricted = load_configs([NetRequest("default"), NetRequest("default-restricted")], str(tmp_path))
    assert (default.type, default.ip_masq, default.source) == ("ptp", True, "built-in")
    assert default.conf["ipam"] == {"type": "host-local", "subnet": "172.16.28.0/24", "routes": [{"dst": "0.0.0.0/0"}]}
    assert (restricted.ip_masq, restricted.conf["ipam"]) == (False, {"type": "host-local", "subnet": "172.31.0.0/16"})
    assert set(BUILT_IN) == {"default", "default-restricted"} and "routes" not in DEFAULT_RESTRICTED["ipam"]
    assert DEFAULT["name"] == "default"


def test_a_file_overrides_a_built_in_and_adds_networks(tmp_path: Path):
    mine = dict(DEFAULT, ipam={"type": "host-local", "subnet": "10.50.0.0/24", "dataDir": "/tmp/x"})
    write(tmp_path, "10-default.conf", mine)
    write(tmp_path, "20-lan.conflist", {"cniVersion": "1.0.0", "name": "lan", "plugins": [
        {"type": "bridge", "bridge": "br-lan", "isGateway": True, "ipam": {"type": "host-local", "subnet": "10.60.0.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    write(tmp_path, "README", "not a config")
    default, lan = load_configs([NetRequest("default"), NetRequest("lan")], str(tmp_path))
    assert default.conf["ipam"]["subnet"] == "10.50.0.0/24" and default.source.endswith("10-default.conf")
    assert (lan.type, lan.bridge, lan.is_gateway, lan.conf["name"], lan.conf["cniVersion"]) == \
        ("bridge", "br-lan", True, "lan", "1.0.0")


def test_unknown_network_lists_the_known(tmp_path: Path):
    with pytest.raises(InvalidInput) as error:
        load_configs([NetRequest("nope")], str(tmp_path))
    assert "no network 'nope'" in messages(error) and "default, default-restricted" in messages(error)


def base(**changes) -> dict:
    document = {"cniVersion": "1.0.0", "name": "bad", "type": "ptp",
                "ipam": {"type": "host-local", "subnet": "10.70.0.0/24"}}
    document.update(changes)
    return document


@pytest.mark.parametrize("document, field, words", [
    (base(type="weird"), "type", "not a network type"),
    (base(type="macvlan", master="eth0"), "type", "macvtap"),
    (base(type="ipvlan"), "type", "VM"),
    (base(ipam={"type": "host-local", "subnet": "10.0.0.0/33"}), "ipam.subnet", "not a subnet"),
    (base(ipam={"type": "host-local", "subnet": "banana"}), "ipam.subnet", "not a subnet"),
    (base(ipam={"type": "host-local", "subnet": "10.0.0.0/31"}), "ipam.subnet", "no room"),
    (base(ipam={"type": "host-local", "ranges": [[{"subnet": "nope"}]]}), "ipam.ranges[0][0].subnet", "not a subnet"),
    (base(ipam={"type": "dhcp"}), "ipam.type", "namespace"),
    (base(ipam={"type": "../../bin/sh"}), "ipam.type", "not a plugin name"),
    (base(ipam=None), "ipam", "IPAM plugin"),
    (base(type="bridge", bridge="a-bridge-name-too-long"), "bridge", "interface name"),
    (base(type="bridge", bridge="br:0"), "bridge", "interface name"),
    (base(type="bridge", bridge="br 0"), "bridge", "interface name"),
    (base(cniVersion="0.2.0"), "cniVersion", "1.0.0"),
    (base(ipMasq="yes"), "ipMasq", "true or false"),
    (base(mtu=10), "mtu", "MTU"),
])
def test_hostile_configurations_are_refused_naming_file_and_field(tmp_path: Path, document, field, words):
    path = write(tmp_path, "50-bad.conf", document)
    with pytest.raises(InvalidInput) as error:
        load_configs([NetRequest("bad")], str(tmp_path))
    assert f"{path}: {field}" in fields(error), messages(error)
    assert words in messages(error)


def test_a_name_host_local_would_use_as_a_path_is_refused(tmp_path: Path):
    write(tmp_path, "a.conf", base(name="../../etc"))
    with pytest.raises(InvalidInput):
        load_configs([NetRequest("bad")], str(tmp_path))
    # asked for by that name it is not even a --net name
    with pytest.raises(InvalidInput):
        parse_net_flag(["../../etc"])


def test_chained_plugins_kvmpod_cannot_do_are_refused(tmp_path: Path):
    write(tmp_path, "a.conflist", {"cniVersion": "1.0.0", "name": "bad", "plugins": [
        base(), {"type": "sbr"}]})
    with pytest.raises(InvalidInput) as error:
        load_configs([NetRequest("bad")], str(tmp_path))
    assert "plugins[1].type" in messages(error)


def test_net_dir_follows_the_environment(monkeypatch):
    monkeypatch.delenv("KVMPOD_NET_DIR", raising=False)
    monkeypatch.delenv("KVMPOD_DIR", raising=False)
    assert net_dir() == "/etc/kvmpod/net.d"
    monkeypatch.setenv("KVMPOD_DIR", "/srv/kvmpod")
    assert net_dir() == "/srv/kvmpod/net.d"
    monkeypatch.setenv("KVMPOD_NET_DIR", "/x/net.d")
    assert net_dir() == "/x/net.d"
