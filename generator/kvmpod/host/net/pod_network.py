"""A pod's networks from start to end: set up before the VM boots, torn down when it is gone.

Setup (rkt's KVM flavour, networking/kvm.go kvmSetup), per requested network in `--net` order (NIC i
is eth<i> in the guest): the IPAM plugin's ADD (cni.py) reserves the pod's address, CHECK confirms it
(CNI 0.4.0 and later), a persistent tap is made and wired (taps.py), then once for the pod: IPv4
forwarding on when a network masquerades or a port is forwarded, `route_localnet` on the forwarding
network's host interface when a port is forwarded, and the pod's nftables chains (nftables.py).

Everything is written to `net.json` in the pod directory BEFORE it is done, so teardown knows what to
undo even after a SIGKILL (`kvmpod gc` calls it): IPAM DEL (once: a network marked released is not
released again), the tap deleted, the chains deleted. Teardown is idempotent and goes on past a
failed step, reporting it; it is what a failed setup calls too.
"""

import ipaddress
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import cni, nftables, taps
from .net_configs import NetConfig, NetRequest
from .nics import Network, Route, check_networks
from .port_forwards import PortForward
from ...pod.problems import InvalidInput

STATE_FILE = "net.json"
STATE_VERSION = 1


@dataclass
class PodNetworks:
    networks: tuple[Network, ...]
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    forwards: list[PortForward] = field(default_factory=list)


def state_path(pod_path: str) -> str:
    return os.path.join(pod_path, STATE_FILE)


def read_state(pod_path: str) -> dict | None:
    try:
        with open(state_path(pod_path)) as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise OSError(f"cannot read {state_path(pod_path)}: {error}") from None
    return state if isinstance(state, dict) else None


def write_state(pod_path: str, state: dict) -> None:
    tmp = state_path(pod_path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, state_path(pod_path))


def forwardable_index(configs: list[NetConfig]) -> int | None:
    """rkt's GetForwardableNet: the first network with ipMasq, else the last; None without networks."""
    if not configs:
        return None
    return next((i for i, c in enumerate(configs) if c.ip_masq), len(configs) - 1)


def _network_from(config: NetConfig, tap: str, result: cni.IPAMResult) -> Network:
    gateway = result.gateway
    if gateway is None:
        raise cni.CNIError(config.ipam_type, "ADD", f"network {config.name!r}: the result has no gateway, which "
                                                    f"a {config.type} network's host side needs; give the range a "
                                                    f"\"gateway\"")
    default_gw, routes = None, []
    for dst, gw in result.routes:
        if dst.prefixlen == 0:
            default_gw = gw or gateway
        else:
            routes.append(Route(dst, gw or gateway))
    return Network(tap, gateway, result.address.ip, result.address.network.prefixlen, ip_masq=False,
                   gateway=default_gw, routes=tuple(routes), name=config.name)


def setup(pod_path: str, pod_uuid: str, configs: list[NetConfig], requests: list[NetRequest],
          forwards: list[PortForward], say: Callable[[str], None]) -> PodNetworks:
    """Make the pod's networks; on any failure undo what was made and raise (InvalidInput, CNIError,
    LinkError, NftError or OSError)."""
    state = {"version": STATE_VERSION, "pod": pod_uuid, "created": time.time(), "networks": [],
             "nft_chains": [], "torn_down": False}
    for i, (config, request) in enumerate(zip(configs, requests)):
        state["networks"].append({"name": config.name, "type": config.type, "source": config.source,
                                  "tap": taps.tap_name(pod_uuid, i), "ifname": f"eth{i}", "conf": config.conf,
                                  "cni_args": request.cni_args(), "ip_masq": config.ip_masq, "released": False})
    want_forwarding = bool(forwards) or any(c.ip_masq for c in configs)
    if want_forwarding:
        state["nft_chains"] = nftables.chain_names(pod_uuid)
    write_state(pod_path, state)  # what will be made, before any of it is
    try:
        return _setup(pod_path, pod_uuid, configs, state, forwards, say)
    except BaseException:
        for problem in teardown(pod_path):
            say(f"warning: {problem}")
        raise


def _setup(pod_path: str, pod_uuid: str, configs: list[NetConfig], state: dict, forwards: list[PortForward],
           say: Callable[[str], None]) -> PodNetworks:
    networks: list[Network] = []
    nameservers: list[str] = []
    search: list[str] = []
    for config, entry in zip(configs, state["networks"]):
        raw = cni.invoke("ADD", entry["conf"], container_id=pod_uuid, ifname=entry["ifname"],
                         cni_args=entry["cni_args"])
        result = cni.parse_ipam_result(raw, config.ipam_type)
        entry["address"] = str(result.address)
        entry["result"] = raw
        write_state(pod_path, state)
        if config.cni_version in ("0.4.0", "1.0.0"):
            cni.invoke("CHECK", {**entry["conf"], "prevResult": raw}, container_id=pod_uuid, ifname=entry["ifname"],
                       cni_args=entry["cni_args"])
        network = _network_from(config, entry["tap"], result)
        problems = check_networks(networks + [network], "--net")
        if problems:
            raise InvalidInput(problems)
        taps.create_tap(entry["tap"], config.mtu)
        if config.type == "ptp":
            taps.wire_ptp(entry["tap"], network.host_ip, network.guest_ip)
            taps.set_sysctl(entry["tap"], "proxy_arp", "1")  # the pod reaches its subnet's other pods via the host
        else:
            gateway = ipaddress.IPv4Interface(f"{network.host_ip}/{network.prefix}") if config.is_gateway else None
            if taps.ensure_bridge(config.bridge, gateway, config.mtu):
                say(f"made bridge {config.bridge} for network {config.name!r} (it stays for the network's next pods)")
            taps.wire_bridge(entry["tap"], config.bridge)
        networks.append(network)
        nameservers += [n for n in result.nameservers if n not in nameservers]
        search += [s for s in result.search if s not in search]
    if state["nft_chains"]:
        if taps.set_sysctl(None, "ip_forward", "1") is not None:
            say("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for the pod's masquerading and forwarded ports; "
                "kvmpod leaves it on")
        masquerades = [nftables.Masquerade(n.guest_ip, n.subnet) for c, n in zip(configs, networks) if c.ip_masq]
        rules = []
        if forwards:
            index = forwardable_index(configs)
            target = networks[index]
            host_if = state["networks"][index]["tap"] if configs[index].type == "ptp" else configs[index].bridge
            taps.set_sysctl(host_if, "route_localnet", "1")  # 127.0.0.1 to the pod, as rkt did
            rules = [nftables.Forward(f.protocol, f.host_port, target.guest_ip, f.pod_port) for f in forwards]
            for f in forwards:
                say(f"forwarding host port {f.protocol}/{f.host_port} to {f.app}'s {f.name!r} at "
                    f"{target.guest_ip}:{f.pod_port}")
        nftables.add_pod(nftables.pod_rules(pod_uuid, masquerades, rules))
    state["ready"] = True
    write_state(pod_path, state)
    return PodNetworks(tuple(networks), tuple(nameservers), tuple(search), forwards)


def teardown(pod_path: str) -> list[str]:
    """Undo what net.json records; the problems left (empty when all is undone). Idempotent."""
    try:
        state = read_state(pod_path)
    except OSError as error:
        return [str(error)]
    if state is None or state.get("torn_down"):
        return []
    problems = []
    if state.get("nft_chains"):
        try:
            nftables.remove_pod(list(state["nft_chains"]))
        except nftables.NftError as error:
            problems.append(f"pod {state.get('pod')}: nftables chains: {error}")
    for entry in state.get("networks", []):
        try:
            taps.delete_link(entry["tap"])
        except (taps.LinkError, OSError) as error:
            problems.append(f"network {entry.get('name')!r}: tap {entry.get('tap')}: {error}")
        if not entry.get("released"):
            try:
                cni.invoke("DEL", entry["conf"], container_id=state["pod"], ifname=entry["ifname"],
                           cni_args=entry.get("cni_args", ""))
                entry["released"] = True
                write_state(pod_path, state)
            except (cni.CNIError, OSError) as error:
                problems.append(f"network {entry.get('name')!r}: {error}")
    if not problems:
        state["torn_down"] = True
        write_state(pod_path, state)
    return problems


def recorded_addresses(pod_path: str) -> list[dict]:
    """[{name, address, tap}] of the pod's networks as net.json records them ([] without networks)."""
    try:
        state = read_state(pod_path) or {}
    except OSError:
        return []
    return [{"network": e.get("name"), "address": e.get("address"), "interface": e.get("ifname"),
             "tap": e.get("tap")} for e in state.get("networks", []) if e.get("address") and not state.get("torn_down")]
