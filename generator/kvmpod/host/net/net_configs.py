"""The pod's networks by name: `--net` as rkt read it, and the CNI network configurations behind the
names, from KVMPOD_NET_DIR (default /etc/kvmpod/net.d) `*.conf` and `*.conflist`, with rkt's
built-in `default` and `default-restricted` when no file names them.

`--net` (rkt's syntax):
    (not given)            the `default` network
    none                   no network: the guest has only loopback
    default,mynet          a comma-separated list of network names, one NIC each, in this order
    mynet:IP=10.1.2.3;K=V  CNI_ARGS for that network's IPAM plugin (rkt passed them the same way)

A network configuration is a CNI one (https://www.cni.dev/docs/spec/): `name`, `type`, `ipam`,
`cniVersion` and, per type, `ipMasq`, `isGateway`, `bridge`. kvmpod's guests are VMs, so the
`type` plugin itself is not run (it would make a veth in a network namespace): kvmpod makes the tap
and wires it as rkt's KVM flavour did, and runs only the `ipam` plugin with the CNI protocol.
"""

import ipaddress
import json
import os
import re
from dataclasses import dataclass

from ...pod.problems import InvalidInput, Problem

NET_DIR_ENV = "KVMPOD_NET_DIR"
DEFAULT_NET_DIR = "/etc/kvmpod/net.d"
STATE_DIR_ENV = "KVMPOD_DIR"  # a state/config root: its net.d is used when KVMPOD_NET_DIR is unset

# Types kvmpod wires itself (rkt's KVM flavour: kvm.go). macvlan became a macvtap there; see TYPE_REFUSED.
TYPES = ("ptp", "bridge")
TYPE_REFUSED = {
    "macvlan": "kvmpod does not make macvtap NICs yet (QEMU would need the macvtap's /dev/tapN open "
               "as a file descriptor); use a \"bridge\" network with the host's NIC in the bridge instead",
    "ipvlan": "an ipvlan NIC cannot be given to a VM; use \"ptp\" or \"bridge\"",
    "host-device": "moving a host device into a VM needs PCI passthrough; use \"ptp\" or \"bridge\"",
    "loopback": "the guest has its own loopback; remove this network",
}
IPAM_TYPES_REFUSED = {
    "dhcp": "the dhcp IPAM plugin leases from inside the pod's network namespace, and a VM's NIC has "
            "none on the host; use \"host-local\" or \"static\"",
}
# Plugins after the first of a conflist: kvmpod does their job itself (portmap: --port) or they only
# tune a veth kvmpod does not make. Anything else is refused rather than silently skipped.
CHAINED_IGNORED = ("portmap", "firewall", "tuning", "bandwidth")
CNI_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
# CNI's network name rule (libcni ValidateNetworkName's regexp); host-local uses it as a directory.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
MAX_NAME = 64
DEFAULT_BRIDGE = "kvm-cni0"  # rkt's KVM flavour's default bridge name (kvm.go defaultBrName)

DEFAULT = {
    "cniVersion": "1.0.0",
    "name": "default",
    "type": "ptp",
    "ipMasq": True,
    "ipam": {"type": "host-local", "subnet": "172.16.28.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
}
DEFAULT_RESTRICTED = {
    "cniVersion": "1.0.0",
    "name": "default-restricted",
    "type": "ptp",
    "ipMasq": False,
    "ipam": {"type": "host-local", "subnet": "172.31.0.0/16"},
}
BUILT_IN = {"default": DEFAULT, "default-restricted": DEFAULT_RESTRICTED}


@dataclass(frozen=True)
class NetConfig:
    name: str
    type: str  # "ptp" or "bridge"
    conf: dict  # the configuration the IPAM plugin gets on stdin (a conflist's first plugin + name, cniVersion)
    source: str  # the file, or "built-in"
    ip_masq: bool = False
    is_gateway: bool = False  # bridge: the bridge holds the gateway address
    bridge: str = DEFAULT_BRIDGE
    mtu: int | None = None

    @property
    def ipam_type(self) -> str:
        return self.conf["ipam"]["type"]

    @property
    def cni_version(self) -> str:
        return self.conf["cniVersion"]


@dataclass(frozen=True)
class NetRequest:
    """One `--net` entry: a network name and its CNI_ARGS."""
    name: str
    args: tuple[tuple[str, str], ...] = ()

    def cni_args(self) -> str:
        return ";".join(["IgnoreUnknown=1"] + [f"{k}={v}" for k, v in self.args])


# ---------------------------------------------------------------- --net

def parse_net_flag(values: list[str] | None) -> list[NetRequest]:
    """`--net` (repeatable, each a comma-separated list) as requests; [] for `none`."""
    if not values:
        return [NetRequest("default")]
    entries: list[str] = []
    for value in values:
        entries += [e for e in value.split(",")]
    problems = []
    requests: list[NetRequest] = []
    for entry in entries:
        name, colon, args_text = entry.strip().partition(":")
        if name == "none":
            if len(entries) > 1:
                problems.append(Problem("--net", "\"none\" means only loopback; give it alone"))
            continue
        if name == "host":
            problems.append(Problem("--net", "\"host\" shares the host's network namespace, which a VM cannot; "
                                             "use \"default\" and --port"))
            continue
        if not name or not NAME_RE.match(name) or len(name) > MAX_NAME:
            problems.append(Problem("--net", f"{entry!r}: give a network name (letters, digits, \"_\", \".\", "
                                             f"\"-\"), optionally NAME:KEY=VALUE;KEY=VALUE"))
            continue
        args = []
        if colon:
            for pair in args_text.split(";"):
                key, eq, val = pair.partition("=")
                if not eq or not key or not re.match(r"^[A-Za-z0-9_.\-]+$", key) or any(c in val for c in ";\0"):
                    problems.append(Problem("--net", f"{entry!r}: CNI args are KEY=VALUE separated by \";\", "
                                                     f"e.g. {name}:IP=172.16.28.10"))
                    break
                args.append((key, val))
        if any(r.name == name for r in requests):
            problems.append(Problem("--net", f"network {name!r} is given twice; each network is one NIC"))
            continue
        requests.append(NetRequest(name, tuple(args)))
    if problems:
        raise InvalidInput(problems)
    return requests


# ---------------------------------------------------------------- configuration files

def net_dir() -> str:
    explicit = os.environ.get(NET_DIR_ENV)
    if explicit:
        return explicit
    root = os.environ.get(STATE_DIR_ENV)
    return os.path.join(root, "net.d") if root else DEFAULT_NET_DIR


def _file_configs(directory: str) -> tuple[dict[str, tuple[dict, str]], list[Problem]]:
    """{name: (raw document, file)} for every *.conf / *.conflist, in lexical order (first wins, as in
    libcni); broken files are problems only when their network is asked for (see load_configs)."""
    found: dict[str, tuple[dict, str]] = {}
    problems: list[Problem] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found, problems
    except OSError as error:
        return found, [Problem(directory, f"cannot list the network configurations: {error.strerror}")]
    for file_name in names:
        if not (file_name.endswith(".conf") or file_name.endswith(".conflist") or file_name.endswith(".json")):
            continue
        path = os.path.join(directory, file_name)
        try:
            with open(path, "rb") as f:
                document = json.loads(f.read(1 << 20))
        except (OSError, ValueError) as error:
            problems.append(Problem(path, f"is not a readable JSON network configuration ({error})"))
            continue
        name = document.get("name") if isinstance(document, dict) else None
        if not isinstance(name, str):
            problems.append(Problem(path, "has no \"name\"; a CNI network configuration names its network"))
            continue
        found.setdefault(name, (document, path))
    return found, problems


def _check_config(document: dict, source: str) -> NetConfig:
    problems: list[Problem] = []

    def report(field: str, message: str) -> None:
        problems.append(Problem(f"{source}: {field}", message))

    name = document.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        report("name", f"{name!r} is not a CNI network name (letters, digits, \"_\", \".\", \"-\", at most "
                       f"{MAX_NAME})")
        raise InvalidInput(problems)
    version = document.get("cniVersion")
    if "plugins" in document:  # a conflist: the first plugin is the network; the rest must be ones kvmpod does
        plugins = document.get("plugins")
        if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) for p in plugins):
            report("plugins", "must be a non-empty array of plugin configurations")
            raise InvalidInput(problems)
        for i, extra in enumerate(plugins[1:], 1):
            if extra.get("type") not in CHAINED_IGNORED:
                report(f"plugins[{i}].type", f"{extra.get('type')!r}: kvmpod runs no chained plugins (it does "
                                              f"{', '.join(CHAINED_IGNORED)}' jobs itself or they do not apply to "
                                              f"a VM); remove it")
        conf = dict(plugins[0])
        conf["name"], conf["cniVersion"] = name, version
    else:
        conf = dict(document)
    if version not in CNI_VERSIONS:
        report("cniVersion", f"{version!r}: kvmpod speaks CNI {', '.join(CNI_VERSIONS)}; write \"1.0.0\"")
    kind = conf.get("type")
    if kind in TYPE_REFUSED:
        report("type", f"{kind!r}: {TYPE_REFUSED[kind]}")
    elif kind not in TYPES:
        report("type", f"{kind!r} is not a network type kvmpod can give a VM; use one of {', '.join(TYPES)}")
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or not ipam.get("type"):
        report("ipam", "must be an object with a \"type\" (e.g. {\"type\": \"host-local\", \"subnet\": "
                       "\"10.1.0.0/24\"}): kvmpod takes the pod's address from the IPAM plugin")
    elif ipam["type"] in IPAM_TYPES_REFUSED:
        report("ipam.type", f"\"{ipam['type']}\": {IPAM_TYPES_REFUSED[ipam['type']]}")
    elif not re.match(r"^[A-Za-z0-9_.\-]+$", ipam["type"]):
        report("ipam.type", f"{ipam['type']!r} is not a plugin name")
    else:
        _check_subnets(ipam, report)
    for key in ("ipMasq", "isGateway"):
        if key in conf and not isinstance(conf[key], bool):
            report(key, f"must be true or false, not {conf[key]!r}")
    bridge = conf.get("bridge", DEFAULT_BRIDGE)
    if kind == "bridge":
        bad_name = interface_name_problem(bridge)
        if bad_name:
            report("bridge", bad_name)
    mtu = conf.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 65535):
        report("mtu", f"{mtu!r} is not an MTU; give 576 to 65535")
    if problems:
        raise InvalidInput(problems)
    return NetConfig(name, kind, conf, source, bool(conf.get("ipMasq", False)), bool(conf.get("isGateway", False)),
                     bridge, mtu)


def _check_subnets(ipam: dict, report) -> None:
    """host-local's subnet/ranges, so a bad one is named here and not by the plugin's message."""
    subnets = []
    if "subnet" in ipam:
        subnets.append(("ipam.subnet", ipam["subnet"]))
    ranges = ipam.get("ranges", [])
    if isinstance(ranges, list):
        for i, rset in enumerate(ranges):
            for j, r in enumerate(rset if isinstance(rset, list) else []):
                if isinstance(r, dict):
                    subnets.append((f"ipam.ranges[{i}][{j}].subnet", r.get("subnet")))
    for field, value in subnets:
        try:
            net = ipaddress.ip_network(value if isinstance(value, str) else "", strict=False)
        except ValueError:
            report(field, f"{value!r} is not a subnet; write it like \"10.1.0.0/24\"")
            continue
        if net.version == 4 and net.prefixlen > 30:
            report(field, f"{value} leaves no room for the host and a pod; use a /30 or wider")


IFNAME_FORBIDDEN = set("/:,=\"'\\") | {chr(c) for c in range(33)} | {chr(127)}
MAX_IFNAME_BYTES = 15  # IFNAMSIZ - 1


def interface_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be an interface name"
    if len(name.encode()) > MAX_IFNAME_BYTES or name in (".", "..") or set(name) & IFNAME_FORBIDDEN:
        return (f"{name!r} is not a Linux interface name (1-{MAX_IFNAME_BYTES} bytes, no \"/\", \":\", \",\", "
                f"\"=\", quotes or white space)")
    return None


def load_configs(requests: list[NetRequest], directory: str | None = None) -> list[NetConfig]:
    """The configuration of each requested network, checked; InvalidInput naming the file and field."""
    directory = directory or net_dir()
    if not requests:
        return []
    files, broken = _file_configs(directory)
    configs, problems = [], []
    for request in requests:
        if request.name in files:
            document, source = files[request.name]
        elif request.name in BUILT_IN:
            document, source = BUILT_IN[request.name], "built-in"
        else:
            problems.append(Problem("--net", f"no network {request.name!r}: none of {directory}/*.conf(list) names "
                                             f"it (known: {', '.join(sorted(set(files) | set(BUILT_IN)))})"))
            problems += broken
            continue
        try:
            configs.append(_check_config(document, source))
        except InvalidInput as error:
            problems += error.problems
    if problems:
        raise InvalidInput(problems)
    return configs
