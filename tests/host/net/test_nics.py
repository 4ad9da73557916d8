"""Networks: rkt's GetKVMNetArgs table, kvmpod's JSON description, CNI results, MACs, refusals."""

import ipaddress

import pytest
from helpers import UUID

from kvmpod.host.net.nics import (Network, Route, guest_description, guest_mac, kernel_ip_params, lkvm_network_args,
                                 lkvm_network_value, parse_cni_result, parse_networks, qemu_network_args)
from kvmpod.pod.problems import InvalidInput


def seed_net(masquerade: bool) -> Network:
    """rkt's testNetDescriber: tap fooInt, host 1.1.1.1, guest 2.2.2.2/255.255.255.0."""
    return Network(tap="fooInt", host_ip=ipaddress.IPv4Address("1.1.1.1"),
                   guest_ip=ipaddress.IPv4Address("2.2.2.2"), prefix=24, ip_masq=masquerade)


def fields(error: pytest.ExceptionInfo) -> list[str]:
    return [p.field for p in error.value.problems]


# ---------------------------------------------------------------- the seed's table

def test_network_without_masquerade():
    assert kernel_ip_params((seed_net(False),)) == ["ip=2.2.2.2:::255.255.255.0::eth0:::"]
    assert lkvm_network_value(seed_net(False)) == "mode=tap,tapif=fooInt,host_ip=1.1.1.1,guest_ip=2.2.2.2"


def test_network_with_masquerade():
    assert kernel_ip_params((seed_net(True),)) == ["ip=2.2.2.2::1.1.1.1:255.255.255.0::eth0:::"]
    assert lkvm_network_value(seed_net(True)) == "mode=tap,tapif=fooInt,host_ip=1.1.1.1,guest_ip=2.2.2.2"


def test_two_networks():
    assert kernel_ip_params((seed_net(False), seed_net(True))) == [
        "ip=2.2.2.2:::255.255.255.0::eth0:::",
        "ip=2.2.2.2::1.1.1.1:255.255.255.0::eth1:::",
    ]


# ---------------------------------------------------------------- kvmpod's JSON description

TWO = [
    {"name": "front", "tap": "kvmpod0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24, "ipMasq": True},
    {"name": "back", "tap": "kvmpod1", "hostIP": "10.2.0.1", "guestIP": "10.2.0.2", "netmask": "255.255.0.0",
     "routes": [{"dst": "192.168.0.0/16", "gw": "10.2.0.254"}, {"dst": "172.16.0.0/12"}]},
]


def test_parse_two_networks_and_render_them_for_both_hypervisors():
    networks = parse_networks(TWO)
    assert networks[1].prefix == 16
    assert networks[1].routes == (Route(ipaddress.IPv4Network("192.168.0.0/16"), ipaddress.IPv4Address("10.2.0.254")),
                                  Route(ipaddress.IPv4Network("172.16.0.0/12")))
    mac0, mac1 = guest_mac(UUID, 0), guest_mac(UUID, 1)
    assert lkvm_network_args(networks, UUID) == [
        "--network", f"mode=tap,tapif=kvmpod0,host_ip=10.1.0.1,guest_ip=10.1.0.2,guest_mac={mac0}",
        "--network", f"mode=tap,tapif=kvmpod1,host_ip=10.2.0.1,guest_ip=10.2.0.2,guest_mac={mac1}",
    ]
    assert qemu_network_args(networks, UUID) == [
        "-netdev", "tap,id=net0,ifname=kvmpod0,script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac0}",
        "-netdev", "tap,id=net1,ifname=kvmpod1,script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net1,mac={mac1}",
    ]
    assert guest_description(networks, UUID) == [
        {"interface": "eth0", "mac": mac0, "address": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": []},
        {"interface": "eth1", "mac": mac1, "address": "10.2.0.2/16",
         "routes": [{"dst": "192.168.0.0/16", "gw": "10.2.0.254"}, {"dst": "172.16.0.0/12"}]},
    ]


def test_macs_are_stable_locally_administered_unicast_and_distinct():
    assert guest_mac(UUID, 0) == guest_mac(UUID, 0)
    macs = {guest_mac(UUID, i) for i in range(64)} | {guest_mac("1" + UUID[1:], 0)}
    assert len(macs) == 65
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b01, mac


@pytest.mark.parametrize("change, field", [
    ({"guestIP": "10.1.0.300"}, "networks[0].guestIP"),
    ({"hostIP": "10.1.0.2"}, "networks[0].guestIP"),          # guest and host equal
    ({"hostIP": "10.9.0.1"}, "networks[0].hostIP"),           # host not on the guest's subnet
    ({"netmask": "255.0.255.0", "prefix": None}, "networks[0].netmask"),
    ({"prefix": 33}, "networks[0].prefix"),
    ({"guestIP": "10.1.0.0"}, "networks[0].guestIP"),         # the network address
    ({"gateway": "10.7.0.1"}, "networks[0].gateway"),
    ({"ipMasq": "yes"}, "networks[0].ipMasq"),
    ({"routes": [{"dst": "10.0.0.1/8"}]}, "networks[0].routes[0].dst"),
])
def test_invalid_address_fields_are_named(change, field):
    net = {"tap": "kvmpod0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24, **change}
    net = {k: v for k, v in net.items() if v is not None}
    with pytest.raises(InvalidInput) as error:
        parse_networks([net])
    assert field in fields(error)


def test_duplicate_taps_and_overlapping_networks_are_refused():
    nets = [{"tap": "kvmpod0", "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 16},
            {"tap": "kvmpod0", "hostIP": "10.1.2.1", "guestIP": "10.1.2.2", "prefix": 24}]
    with pytest.raises(InvalidInput) as error:
        parse_networks(nets)
    messages = {p.field: p.message for p in error.value.problems}
    assert "also the tap of networks[0]" in messages["networks[1].tap"]
    assert "overlaps 10.1.0.0/16" in messages["networks[1].guestIP"]


@pytest.mark.parametrize("tap", ["a,b", "a=b", "a\nb", "a b", "a/b", "a:b", "", "sixteen-bytes-xx", ".."])
def test_hostile_tap_names_are_refused(tap):
    with pytest.raises(InvalidInput) as error:
        parse_networks([{"tap": tap, "hostIP": "10.1.0.1", "guestIP": "10.1.0.2", "prefix": 24}])
    assert fields(error) == ["networks[0].tap"]


def test_a_description_that_is_not_a_list():
    with pytest.raises(InvalidInput) as error:
        parse_networks({"tap": "x"})
    assert fields(error) == ["networks"]


# ---------------------------------------------------------------- CNI results

CNI_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "tap0", "mac": "aa:bb:cc:dd:ee:ff"},
                   {"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/24", "gw": "10.22.0.254"}],
    "dns": {},
}


def test_cni_1_0_0_result():
    [net] = parse_cni_result(CNI_100)
    assert (net.tap, str(net.host_ip), str(net.guest_ip), net.prefix, str(net.guest_gateway)) == \
           ("tap0", "10.22.0.1", "10.22.0.5", 16, "10.22.0.1")
    assert net.routes == (Route(ipaddress.IPv4Network("192.168.0.0/24"), ipaddress.IPv4Address("10.22.0.254")),)


def test_cni_0_4_0_result_needs_ip_versions():
    result = {**CNI_100, "cniVersion": "0.4.0",
              "ips": [{"version": "4", "address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 0}]}
    [net] = parse_cni_result(result)
    assert str(net.guest_ip) == "10.22.0.5"
    result["ips"][0].pop("version")
    with pytest.raises(InvalidInput) as error:
        parse_cni_result(result)
    assert fields(error) == ["ips[0].version"]


def test_cni_errors_name_the_field():
    for result, field in [
        ({**CNI_100, "cniVersion": "0.3.1"}, "cniVersion"),
        ({**CNI_100, "ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 7}]}, "ips[0].interface"),
        ({**CNI_100, "ips": [{"address": "fd00::5/64", "gateway": "fd00::1", "interface": 0}]}, "ips[0].address"),
        ({**CNI_100, "ips": [{"address": "10.22.0.5/16", "interface": 0}]}, "ips[0].gateway"),
        ({**CNI_100, "interfaces": [{"name": "tap,0"}]}, "interfaces[0].name"),
    ]:
        with pytest.raises(InvalidInput) as error:
            parse_cni_result(result)
        assert field in fields(error), (field, error.value.problems)


def test_the_shipped_examples_parse():
    import json
    from pathlib import Path

    import kvmpod
    examples = Path(kvmpod.__file__).parent / "examples" / "networks"
    assert len(parse_networks(json.loads((examples / "two-nics.json").read_text()))) == 2
    for name in ("cni-result-0.4.0.json", "cni-result-1.0.0.json"):
        [net] = parse_cni_result(json.loads((examples / name).read_text()))
        assert (net.tap, str(net.guest_ip), str(net.host_ip)) == ("kvmpod-tap0", "10.22.0.5", "10.22.0.1")
