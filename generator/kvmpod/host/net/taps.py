"""The host side of a pod's NICs, as rkt's KVM flavour made it (networking/kvm.go), with iproute2's
`ip` and /proc/sys:

- every NIC is a persistent tap (`ip tuntap add ... mode tap`) that QEMU (`-netdev tap,ifname=`) or
  lkvm (`--network mode=tap,tapif=`) opens by name; persistent, so it exists before the hypervisor
  and stays until kvmpod deletes it (a killed hypervisor leaves it for `kvmpod gc`);
- ptp: the tap holds the network's gateway address as a /32 (rkt put it there and removed the tap's
  subnet route) and a /32 route to the pod, so any number of pods on one subnet each get their own
  link;
- bridge: the tap joins the bridge, which is made (and brought up) when missing; with `isGateway` the
  bridge holds the gateway address with the subnet's prefix. The bridge is the network's, not the
  pod's: it stays when the pod ends (as CNI's bridge plugin leaves it).
"""

import ipaddress
import json
import subprocess

IP = "ip"
SYSCTL = "/proc/sys/net/ipv4"


class LinkError(Exception):
    pass


def tap_name(pod_uuid: str, index: int) -> str:
    """`kp<first 8 hex of the UUID>n<index>`: 12-13 bytes, under IFNAMSIZ (15), like rkt's rkt-XXXX-tapN."""
    return f"kp{pod_uuid.replace('-', '')[:8]}n{index}"


def _ip(*args: str, ok_if: tuple[str, ...] = ()) -> None:
    proc = subprocess.run([IP, *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        message = proc.stderr.strip()
        if any(s in message for s in ok_if):
            return
        raise LinkError(f"ip {' '.join(args)}: {message}")


def _link_kind(name: str) -> str | None:
    """None when there is no such link, else its kind ("tun", "bridge", "" for plain ones). From `ip`,
    not /sys/class/net: /sys shows the namespace that mounted it, not necessarily kvmpod's."""
    proc = subprocess.run([IP, "-d", "-j", "link", "show", "dev", name], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return None
    try:
        info = json.loads(proc.stdout)[0].get("linkinfo") or {}
    except (ValueError, IndexError, AttributeError):
        return ""
    return info.get("info_kind", "")


def link_exists(name: str) -> bool:
    return _link_kind(name) is not None


def create_tap(name: str, mtu: int | None = None) -> None:
    if link_exists(name):
        raise LinkError(f"an interface {name!r} exists already (another pod with the same UUID prefix, or a "
                        f"leftover: kvmpod gc)")
    _ip("tuntap", "add", "dev", name, "mode", "tap")
    if mtu:
        _ip("link", "set", "dev", name, "mtu", str(mtu))


def delete_link(name: str) -> None:
    """Remove an interface; nothing when it is gone (teardown is idempotent)."""
    if link_exists(name):
        _ip("link", "delete", "dev", name, ok_if=("Cannot find device",))


def set_sysctl(interface: str | None, key: str, value: str) -> str | None:
    """Write /proc/sys/net/ipv4/[conf/IF/]KEY; returns the old value (None: unchanged)."""
    path = f"{SYSCTL}/conf/{interface}/{key}" if interface else f"{SYSCTL}/{key}"
    with open(path) as f:
        old = f.read().strip()
    if old == value:
        return None
    with open(path, "w") as f:
        f.write(value)
    return old


def wire_ptp(tap: str, host_ip: ipaddress.IPv4Address, pod_ip: ipaddress.IPv4Address) -> None:
    _ip("address", "add", f"{host_ip}/32", "dev", tap, ok_if=("File exists",))
    _ip("link", "set", "dev", tap, "up")
    _ip("route", "replace", f"{pod_ip}/32", "dev", tap, "src", str(host_ip))


def ensure_bridge(bridge: str, gateway: ipaddress.IPv4Interface | None, mtu: int | None) -> bool:
    """The bridge up (made when missing), with the gateway address when isGateway; True when made."""
    made = False
    if not link_exists(bridge):
        _ip("link", "add", "name", bridge, "type", "bridge", ok_if=("File exists",))
        made = True
    elif _link_kind(bridge) != "bridge":
        raise LinkError(f"{bridge!r} exists and is not a bridge; name another \"bridge\" in the network "
                        f"configuration")
    if mtu and made:
        _ip("link", "set", "dev", bridge, "mtu", str(mtu))
    if gateway is not None:
        _ip("address", "add", str(gateway), "dev", bridge, ok_if=("File exists",))
    _ip("link", "set", "dev", bridge, "up")
    return made


def wire_bridge(tap: str, bridge: str) -> None:
    _ip("link", "set", "dev", tap, "master", bridge)
    _ip("link", "set", "dev", tap, "up")
