"""The guest half of networks: /etc/kvmpod/networks.json becomes one oneshot unit per NIC (pure).

The host writes the file (host.network.guest_description, host.stage.stage_pod). The kernel's
`ip=` configures at most one NIC (and only with CONFIG_IP_PNP, which Debian's kernels lack), so,
as rkt 1.30 did, each NIC gets a unit that sets its MAC, address, link and routes. The kernel is
booted with net.ifnames=0, so the NICs keep the names eth0, eth1, … in device order.

The file is a JSON array, one object per NIC:
    {"interface": "eth0", "mac": "02:…", "address": "10.1.0.2/24",
     "gateway": "10.1.0.1",                         optional: the default route
     "routes": [{"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]}     optional
"""

import ipaddress
from ..pod.frozen import frozen

from ..pod.guest_paths import NETWORKS_PATH
from ..pod.problems import InvalidInput, Problem
from .unitfile import DOCUMENTATION, GeneratedFile, Output, Section, render_unit, wants_link

# iproute2's ip: Debian 12 ships /bin/ip, with /sbin/ip and /usr/sbin/ip as links to it (merged /usr);
# /sbin/ip is the path that exists on merged and unmerged Debian alike.
IP = "/sbin/ip"
WANTED_BY = "multi-user.target"
DEVICE_DROP_IN = "50-kvmpod-timeout.conf"
DEVICE_TIMEOUT = "10min"


@frozen
class GuestRoute:
    dst: str
    gw: str | None


@frozen
class GuestNic:
    interface: str
    mac: str
    address: str  # with prefix, e.g. "10.1.0.2/24"
    gateway: str | None
    routes: tuple[GuestRoute, ...]


def _is_mac(value: str) -> bool:
    parts = value.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts) \
        and not int(parts[0], 16) & 1


def parse_guest_networks(document: object, source: str = NETWORKS_PATH) -> tuple[GuestNic, ...]:
    """The network description, checked; else InvalidInput with every problem."""
    problems: list[Problem] = []

    def report(field: str, message: str) -> None:
        problems.append(Problem(f"{source}: {field}", message))

    if not isinstance(document, list):
        raise InvalidInput([Problem(source, "must be a JSON array of NICs")])
    nics = []
    for i, raw in enumerate(document):
        field = f"[{i}]"
        if not isinstance(raw, dict):
            report(field, "must be a JSON object")
            continue
        before = len(problems)
        interface = raw.get("interface")
        if interface != f"eth{i}":
            report(f"{field}.interface", f"is {interface!r}; NIC {i} is \"eth{i}\"")
        mac = raw.get("mac")
        if not isinstance(mac, str) or not _is_mac(mac):
            report(f"{field}.mac", f"{mac!r} is not a unicast MAC in lowercase like \"02:00:00:00:00:01\"")
        address = raw.get("address")
        try:
            iface = ipaddress.IPv4Interface(address if isinstance(address, str) else "")
            if "/" not in address:
                raise ValueError
        except ValueError:
            report(f"{field}.address", f"{address!r} is not an IPv4 address with prefix like \"10.1.0.2/24\"")
            iface = None
        gateway = raw.get("gateway")
        if gateway is not None:
            try:
                gw = ipaddress.IPv4Address(gateway if isinstance(gateway, str) else "")
                if iface is not None and gw not in iface.network:
                    report(f"{field}.gateway", f"{gateway} is not in {iface.network}")
            except ValueError:
                report(f"{field}.gateway", f"{gateway!r} is not an IPv4 address")
        routes = []
        raw_routes = raw.get("routes", [])
        if not isinstance(raw_routes, list):
            report(f"{field}.routes", "must be a JSON array")
            raw_routes = []
        for j, route in enumerate(raw_routes):
            if not isinstance(route, dict):
                report(f"{field}.routes[{j}]", "must be a JSON object")
                continue
            try:
                dst = str(ipaddress.IPv4Network(route.get("dst") if isinstance(route.get("dst"), str) else ""))
            except ValueError:
                report(f"{field}.routes[{j}].dst", f"{route.get('dst')!r} is not an IPv4 network like \"10.0.0.0/8\"")
                continue
            rgw = route.get("gw")
            if rgw is not None:
                try:
                    rgw = str(ipaddress.IPv4Address(rgw if isinstance(rgw, str) else ""))
                except ValueError:
                    report(f"{field}.routes[{j}].gw", f"{rgw!r} is not an IPv4 address")
                    continue
            routes.append(GuestRoute(dst, rgw))
        if len(problems) == before:
            nics.append(GuestNic(interface, mac, address, gateway, tuple(routes)))
    if problems:
        raise InvalidInput(problems)
    return tuple(nics)


def network_unit(nic: GuestNic) -> str:
    return f"kvmpod-network-{nic.interface}.service"


def plan_network_units(networks: tuple[GuestNic, ...], manifest_path: str) -> list[Output]:
    """One oneshot `kvmpod-network-eth<i>.service` per NIC, wanted by multi-user.target and ordered
    before network.target, so the apps (and anything After=network.target) find the network up."""
    outputs: list[Output] = []
    for nic in networks:
        unit = network_unit(nic)
        device = f"sys-subsystem-net-devices-{nic.interface}.device"
        commands = [
            f"{IP} link set dev {nic.interface} address {nic.mac}",
            f"{IP} address replace {nic.address} dev {nic.interface}",  # replace: the kernel's ip= may have set it
            f"{IP} link set dev {nic.interface} up",
        ]
        if nic.gateway is not None:
            commands.append(f"{IP} route replace default via {nic.gateway} dev {nic.interface}")
        for route in nic.routes:
            via = f" via {route.gw}" if route.gw else ""
            commands.append(f"{IP} route replace {route.dst}{via} dev {nic.interface}")
        sections: list[Section] = [
            ("Unit", [
                ("Description", f"kvmpod network {nic.interface} ({nic.address})"),
                ("Documentation", DOCUMENTATION),
                ("SourcePath", manifest_path),
                # Default dependencies kept (after sysinit.target); they do not order against network.target.
                ("BindsTo", device),
                ("After", device),
                ("After", "network-pre.target"),
                ("Before", "network.target"),
                ("Wants", "network.target"),
            ]),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes")]
             + [("ExecStart", command) for command in commands]),
        ]
        outputs.append(GeneratedFile(unit, render_unit(sections)))
        outputs.append(wants_link(WANTED_BY, unit))
        # The NIC appears once udev has loaded virtio_net; a loaded TCG guest was seen take longer than
        # the device job's default 90 s (DefaultTimeoutStartSec), failing the NIC's unit for good.
        outputs.append(GeneratedFile(f"{device}.d/{DEVICE_DROP_IN}", render_unit(
            [("Unit", [("JobRunningTimeoutSec", DEVICE_TIMEOUT)])])))
    outputs.sort(key=lambda o: o.path)
    return outputs
