"""The pod's networks on the host: read them (kvmpod's JSON list or a CNI result), check them,
and render them for lkvm, QEMU, the kernel command line and the guest's network units.

kvmpod's network description (`--networks FILE`) is a JSON array, one object per NIC, in guest
order (the first is eth0):

    [
      {
        "name": "default",            optional, for messages
        "tap": "kvmpod0",             host tap interface, created and configured by the launcher or CNI
        "hostIP": "10.1.0.1",         the tap's address on the host
        "guestIP": "10.1.0.2",        the guest's address on eth<i>
        "prefix": 24,                 or "netmask": "255.255.255.0" (one of the two)
        "ipMasq": true,               the host masquerades: the guest routes through hostIP by default
        "gateway": "10.1.0.1",        optional: the guest's default gateway (default: hostIP if ipMasq)
        "routes": [{"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]    optional, "gw" optional
      }
    ]

A CNI result (`--cni-result FILE`, cniVersion 0.4.0 or 1.0.0) maps onto the same model: each IPv4
entry of "ips" is one NIC; its "interface" index names the tap ("interfaces[i].name"), its
"address" is guestIP/prefix and its "gateway" both hostIP and the guest's gateway; "routes" go
to the NIC whose subnet holds their "gw" (the first NIC when there is none).

Facts that shape this (kvmtool's virtio/net.c): with `tapif` set lkvm neither assigns host_ip to
the tap nor brings it up, so the launcher must; guest_ip only feeds lkvm's user-mode DHCP, so in
tap mode the guest learns its address from the kernel's `ip=` or from the units kvmpod's generator
makes from /etc/kvmpod/networks.json.
"""

import hashlib
import ipaddress
import uuid as uuidlib
from dataclasses import dataclass

from ...pod.problems import InvalidInput, Problem

# Linux interface names: at most IFNAMSIZ - 1 = 15 bytes, no "/", ":" or white space.
# kvmtool tokenises --network on "," and "=", QEMU's option parser on ",": refuse all of them.
MAX_IFNAME_BYTES = 15
_IFNAME_FORBIDDEN = set("/:,=\"'\\") | {chr(c) for c in range(33)} | {chr(127)}


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network
    gw: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class Network:
    tap: str
    host_ip: ipaddress.IPv4Address
    guest_ip: ipaddress.IPv4Address
    prefix: int
    ip_masq: bool = False
    gateway: ipaddress.IPv4Address | None = None  # explicit; see `guest_gateway`
    routes: tuple[Route, ...] = ()
    name: str = ""

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefix}").netmask)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.guest_ip}/{self.prefix}").network

    @property
    def guest_gateway(self) -> ipaddress.IPv4Address | None:
        """The guest's default gateway: the explicit one, else the host when it masquerades."""
        if self.gateway is not None:
            return self.gateway
        return self.host_ip if self.ip_masq else None


def guest_interface(index: int) -> str:
    return f"eth{index}"


# ---------------------------------------------------------------- MAC addresses

def parse_uuid(text: str, field: str = "--uuid") -> str:
    """The pod UUID in canonical form, or InvalidInput."""
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise InvalidInput([Problem(field, f"{text!r} is not a UUID; give the pod's UUID, "
                                           f"e.g. 6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e")]) from None


def guest_mac(pod_uuid: str, index: int) -> str:
    """A stable MAC for NIC `index` of the pod: locally administered, unicast, never random."""
    digest = bytearray(hashlib.sha256(f"kvmpod-mac\0{pod_uuid}\0{index}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02  # bit 0 clear: unicast; bit 1 set: locally administered
    return ":".join(f"{b:02x}" for b in digest)


# ---------------------------------------------------------------- parsing kvmpod's JSON list

class _Check:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def report(self, field: str, message: str) -> None:
        self.problems.append(Problem(field, message))

    def ipv4(self, value: object, field: str, *, required: bool = True) -> ipaddress.IPv4Address | None:
        if value is None:
            if required:
                self.report(field, "is required; give an IPv4 address like \"10.1.0.2\"")
            return None
        if not isinstance(value, str):
            self.report(field, f"must be a string holding an IPv4 address, not {value!r}")
            return None
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            self.report(field, f"{value!r} is not an IPv4 address; write it like \"10.1.0.2\"")
            return None
        if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
            self.report(field, f"{value!r} cannot be an interface's address; use a unicast address")
            return None
        return address

    def tap(self, value: object, field: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.report(field, "is required; give the host tap interface's name, e.g. \"kvmpod0\"")
            return None
        bad = sorted(set(value) & _IFNAME_FORBIDDEN)
        if bad:
            self.report(field, f"{value!r} contains {', '.join(repr(c) for c in bad)}; an interface name "
                               f"cannot, and lkvm and QEMU would split the option there: rename the tap")
            return None
        if len(value.encode()) > MAX_IFNAME_BYTES or value in (".", ".."):
            self.report(field, f"{value!r} is not a Linux interface name (1-{MAX_IFNAME_BYTES} bytes, "
                               f"not \".\" or \"..\"); rename the tap")
            return None
        return value

    def prefix(self, obj: dict, field: str) -> int | None:
        has_prefix, has_mask = "prefix" in obj, "netmask" in obj
        if has_prefix == has_mask:
            self.report(field, "give exactly one of \"prefix\" (e.g. 24) or \"netmask\" (e.g. \"255.255.255.0\")")
            return None
        if has_prefix:
            value = obj["prefix"]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 30:
                self.report(f"{field}.prefix", f"{value!r} is not a usable prefix length; give 1 to 30")
                return None
            return value
        value = obj["netmask"]
        try:
            if not isinstance(value, str):
                raise ValueError
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen
        except ValueError:
            self.report(f"{field}.netmask", f"{value!r} is not a netmask; write it like \"255.255.255.0\"")
            return None
        if not 1 <= prefix <= 30:
            self.report(f"{field}.netmask", f"{value!r} leaves no room for two hosts; use a /30 or wider")
            return None
        return prefix

    def cidr(self, value: object, field: str) -> ipaddress.IPv4Network | None:
        try:
            if not isinstance(value, str):
                raise ValueError
            return ipaddress.IPv4Network(value)
        except ValueError:
            self.report(field, f"{value!r} is not an IPv4 network with its host bits clear; "
                               f"write it like \"192.168.0.0/16\" or \"0.0.0.0/0\"")
            return None


def parse_networks(document: object) -> tuple[Network, ...]:
    """kvmpod's network description (already JSON-decoded), checked; else InvalidInput."""
    check = _Check()
    if not isinstance(document, list):
        raise InvalidInput([Problem("networks", "must be a JSON array of networks (see kvmpod.host.net.nics)")])
    networks = []
    for i, raw in enumerate(document):
        field = f"networks[{i}]"
        if not isinstance(raw, dict):
            check.report(field, "must be a JSON object")
            continue
        before = len(check.problems)
        name = raw.get("name", "")
        if not isinstance(name, str):
            check.report(f"{field}.name", "must be a string")
        tap = check.tap(raw.get("tap"), f"{field}.tap")
        host_ip = check.ipv4(raw.get("hostIP"), f"{field}.hostIP")
        guest_ip = check.ipv4(raw.get("guestIP"), f"{field}.guestIP")
        prefix = check.prefix(raw, field)
        ip_masq = raw.get("ipMasq", False)
        if not isinstance(ip_masq, bool):
            check.report(f"{field}.ipMasq", f"must be true or false, not {ip_masq!r}")
        gateway = check.ipv4(raw.get("gateway"), f"{field}.gateway", required=False)
        routes = []
        raw_routes = raw.get("routes", [])
        if not isinstance(raw_routes, list):
            check.report(f"{field}.routes", "must be a JSON array")
            raw_routes = []
        for j, raw_route in enumerate(raw_routes):
            rfield = f"{field}.routes[{j}]"
            if not isinstance(raw_route, dict):
                check.report(rfield, "must be a JSON object with \"dst\" and optionally \"gw\"")
                continue
            dst = check.cidr(raw_route.get("dst"), f"{rfield}.dst")
            gw = check.ipv4(raw_route.get("gw"), f"{rfield}.gw", required=False)
            if dst is not None:
                routes.append(Route(dst, gw))
        if len(check.problems) == before:
            networks.append(Network(tap, host_ip, guest_ip, prefix, ip_masq, gateway, tuple(routes), name))
    check.problems += check_networks(networks, "networks")
    if check.problems:
        raise InvalidInput(check.problems)
    return tuple(networks)


def check_networks(networks: list[Network], prefix: str) -> list[Problem]:
    """What makes a set of individually well-formed networks unusable together."""
    problems = []
    taps: dict[str, int] = {}
    for i, net in enumerate(networks):
        field = f"{prefix}[{i}]"
        subnet = net.subnet
        if net.guest_ip == net.host_ip:
            problems.append(Problem(f"{field}.guestIP", f"{net.guest_ip} is also the host's address; "
                                                        f"give the guest its own"))
        if net.guest_ip in (subnet.network_address, subnet.broadcast_address):
            problems.append(Problem(f"{field}.guestIP", f"{net.guest_ip} is the network or broadcast address "
                                                        f"of {subnet}; pick a host address"))
        if net.host_ip not in subnet:
            problems.append(Problem(f"{field}.hostIP", f"{net.host_ip} is not in the guest's subnet {subnet}; "
                                                       f"the guest could not reach it"))
        if net.gateway is not None and (net.gateway not in subnet or net.gateway == net.guest_ip):
            problems.append(Problem(f"{field}.gateway", f"{net.gateway} is not another address in {subnet}"))
        for j, route in enumerate(net.routes):
            if route.gw is not None and route.gw not in subnet:
                problems.append(Problem(f"{field}.routes[{j}].gw", f"{route.gw} is not in {subnet}, "
                                                                   f"the subnet of this NIC"))
        if net.tap in taps:
            problems.append(Problem(f"{field}.tap", f"{net.tap!r} is also the tap of {prefix}[{taps[net.tap]}]; "
                                                    f"each NIC needs its own tap"))
        taps.setdefault(net.tap, i)
        for k in range(i):
            if networks[k].subnet.overlaps(subnet):
                problems.append(Problem(f"{field}.guestIP", f"{subnet} overlaps {networks[k].subnet} of "
                                                            f"{prefix}[{k}]; give each NIC its own subnet"))
    return problems


# ---------------------------------------------------------------- parsing a CNI result

CNI_VERSIONS = ("0.4.0", "1.0.0")


def parse_cni_result(document: object) -> tuple[Network, ...]:
    """A CNI plugin's result (cniVersion 0.4.0 or 1.0.0) as kvmpod's networks; else InvalidInput."""
    check = _Check()
    if not isinstance(document, dict):
        raise InvalidInput([Problem("(cni result)", "must be a JSON object as printed by a CNI plugin")])
    version = document.get("cniVersion")
    if version not in CNI_VERSIONS:
        raise InvalidInput([Problem("cniVersion", f"is {version!r}; kvmpod reads CNI results of version "
                                                  f"{' or '.join(CNI_VERSIONS)}")])
    interfaces = document.get("interfaces", [])
    if not isinstance(interfaces, list):
        check.report("interfaces", "must be a JSON array")
        interfaces = []
    ips = document.get("ips", [])
    if not isinstance(ips, list) or not ips:
        raise InvalidInput([Problem("ips", "must be a non-empty JSON array: kvmpod needs the guest's address")])
    networks: list[Network] = []
    for i, ip in enumerate(ips):
        field = f"ips[{i}]"
        if not isinstance(ip, dict):
            check.report(field, "must be a JSON object")
            continue
        if version == "0.4.0" and ip.get("version") not in ("4", "6"):
            check.report(f"{field}.version", f"is {ip.get('version')!r}; CNI 0.4.0 says \"4\" or \"6\"")
            continue
        try:
            address = ipaddress.ip_interface(ip.get("address"))
        except ValueError:
            check.report(f"{field}.address", f"{ip.get('address')!r} is not an address with a prefix "
                                             f"like \"10.1.0.2/24\"")
            continue
        if address.version != 4:
            check.report(f"{field}.address", f"{address} is IPv6; kvmpod configures IPv4 only for now")
            continue
        index = ip.get("interface")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(interfaces) \
                or not isinstance(interfaces[index], dict):
            check.report(f"{field}.interface", f"{index!r} is not an index into \"interfaces\"; kvmpod needs "
                                               f"it to find the tap")
            continue
        tap = check.tap(interfaces[index].get("name"), f"interfaces[{index}].name")
        gateway = check.ipv4(ip.get("gateway"), f"{field}.gateway")
        if tap is None or gateway is None:
            continue
        if address.network.prefixlen > 30:
            check.report(f"{field}.address", f"{address} leaves no room for the host; use a /30 or wider")
            continue
        networks.append(Network(tap, gateway, address.ip, address.network.prefixlen, ip_masq=True,
                                name=f"cni ips[{i}]"))
    routes = document.get("routes", [])
    if not isinstance(routes, list):
        check.report("routes", "must be a JSON array")
        routes = []
    per_nic: list[list[Route]] = [[] for _ in networks]
    for j, raw in enumerate(routes):
        if not isinstance(raw, dict):
            check.report(f"routes[{j}]", "must be a JSON object")
            continue
        try:
            dst = ipaddress.ip_network(raw.get("dst"))
        except ValueError:
            check.report(f"routes[{j}].dst", f"{raw.get('dst')!r} is not a network like \"0.0.0.0/0\"")
            continue
        if dst.version != 4:
            continue  # an IPv6 route belongs to an IPv6 address, which was refused above
        gw = check.ipv4(raw.get("gw"), f"routes[{j}].gw", required=False)
        if dst.prefixlen == 0 and (gw is None or any(gw == n.gateway or gw == n.host_ip for n in networks)):
            continue  # the default route through the gateway: already the NIC's gateway
        target = next((k for k, n in enumerate(networks) if gw is not None and gw in n.subnet), 0 if networks else None)
        if target is None:
            continue
        per_nic[target].append(Route(dst, gw))
    networks = [Network(n.tap, n.host_ip, n.guest_ip, n.prefix, n.ip_masq, n.gateway, tuple(r), n.name)
                for n, r in zip(networks, per_nic)]
    if not check.problems:
        check.problems += check_networks(networks, "ips")
    if check.problems:
        raise InvalidInput(check.problems)
    return tuple(networks)


# ---------------------------------------------------------------- renderings

def kernel_ip_param(network: Network, index: int) -> str:
    """rkt's GetKVMNetArgs kernel argument: ip=<client>:<server>:<gw>:<mask>:<host>:<dev>:<autoconf>:<dns0>:<dns1>."""
    gateway = network.host_ip if network.ip_masq else None  # the seed's rule; see guest_gateway for ours
    if network.gateway is not None:
        gateway = network.gateway
    return f"ip={network.guest_ip}::{gateway or ''}:{network.netmask}::{guest_interface(index)}:::"


def kernel_ip_params(networks: tuple[Network, ...]) -> list[str]:
    """One `ip=` per network, as rkt wrote them. The kernel honours only the last `ip=` (and only
    with CONFIG_IP_PNP, which Debian's kernels lack), so kvmpod also writes networks.json, from
    which the guest generator makes one unit per NIC; the argv builders pass only eth0's."""
    return [kernel_ip_param(n, i) for i, n in enumerate(networks)]


def lkvm_network_value(network: Network, mac: str | None = None) -> str:
    """The value of lkvm's --network for a tap NIC (no value may contain "," or "=": checked at parse)."""
    value = f"mode=tap,tapif={network.tap},host_ip={network.host_ip},guest_ip={network.guest_ip}"
    return value + (f",guest_mac={mac}" if mac else "")


def lkvm_network_args(networks: tuple[Network, ...], pod_uuid: str) -> list[str]:
    args = []
    for i, net in enumerate(networks):
        value = lkvm_network_value(net, guest_mac(pod_uuid, i))
        # kvmtool splits on "," and "=" and an empty value shifts every later key: refuse, never emit.
        for item in value.split(","):
            key, _, val = item.partition("=")
            if not key or not val or "=" in val:
                raise ValueError(f"lkvm --network value {value!r} would be misread at {item!r}")
        args += ["--network", value]
    return args


def qemu_network_args(networks: tuple[Network, ...], pod_uuid: str) -> list[str]:
    args = []
    for i, net in enumerate(networks):
        args += [
            "-netdev", f"tap,id=net{i},ifname={net.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net{i},mac={guest_mac(pod_uuid, i)}",
        ]
    return args


def guest_description(networks: tuple[Network, ...], pod_uuid: str) -> list[dict]:
    """What the host writes to /etc/kvmpod/networks.json for the guest (read by guest.network)."""
    description = []
    for i, net in enumerate(networks):
        entry: dict = {
            "interface": guest_interface(i),
            "mac": guest_mac(pod_uuid, i),
            "address": f"{net.guest_ip}/{net.prefix}",
        }
        if net.guest_gateway is not None:
            entry["gateway"] = str(net.guest_gateway)
        entry["routes"] = [{"dst": str(r.dst), **({"gw": str(r.gw)} if r.gw else {})} for r in net.routes]
        description.append(entry)
    return description
