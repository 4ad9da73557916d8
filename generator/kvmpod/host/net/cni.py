"""The CNI protocol, from the runtime's side, for IPAM plugins (https://www.cni.dev/docs/spec/):
the plugin is an executable found on CNI_PATH, told what to do by its environment (CNI_COMMAND,
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH), given the network configuration on
stdin, and answering with a result (ADD) or nothing (DEL, CHECK) on stdout, or an error object and a
non-zero exit.

kvmpod calls only the configuration's `ipam` plugin (host-local, static, ...), as rkt's KVM flavour
did (networking/kvm.go kvmSetupNetAddressing): the NIC itself is a tap kvmpod makes. The container ID
is the pod's UUID and CNI_IFNAME the guest's interface name (eth0, ...), so host-local's store reads
`<dataDir>/<network>/<address>` = "<pod uuid>\\n<ifname>" and DEL releases exactly that reservation.
A VM's NIC has no network namespace on the host; CNI_NETNS is the namespace kvmpod runs in (which
IPAM plugins other than dhcp never open; dhcp is refused in net_configs).
"""

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass

CNI_PATH_ENV = "KVMPOD_CNI_PATH"
DEFAULT_CNI_PATH = "/usr/lib/cni:/opt/cni/bin"  # Debian's containernetworking-plugins, then upstream's place
PLUGIN_TIMEOUT = 60.0


class CNIError(Exception):
    """A plugin failed: its CNI error (code, msg, details) or why it could not run."""

    def __init__(self, plugin: str, command: str, message: str, code: int | None = None):
        super().__init__(f"CNI {command} by {plugin}: {message}" + (f" (CNI error code {code})" if code else ""))
        self.plugin, self.command, self.code = plugin, command, code


def cni_path() -> str:
    return os.environ.get(CNI_PATH_ENV) or DEFAULT_CNI_PATH


def find_plugin(name: str, path: str | None = None) -> str:
    path = path or cni_path()
    if "/" in name or name in ("", ".", ".."):
        raise CNIError(name, "find", "a plugin name cannot hold \"/\"")
    for directory in path.split(":"):
        candidate = os.path.join(directory, name)
        if directory and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(name, "find", f"no executable {name!r} in {path} (install containernetworking-plugins, "
                                 f"or set {CNI_PATH_ENV})")


def plugin_env(command: str, container_id: str, ifname: str, cni_args: str, path: str,
               netns: str = "/proc/self/ns/net") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                "CNI_IFNAME": ifname, "CNI_ARGS": cni_args, "CNI_PATH": path})
    return env


def invoke(command: str, conf: dict, *, container_id: str, ifname: str, cni_args: str = "",
           path: str | None = None) -> dict | None:
    """Run the conf's IPAM plugin; its parsed result for ADD, None for DEL and CHECK; CNIError else."""
    path = path or cni_path()
    plugin = conf["ipam"]["type"]
    executable = find_plugin(plugin, path)
    try:
        proc = subprocess.run([executable], input=json.dumps(conf).encode(), capture_output=True,
                              env=plugin_env(command, container_id, ifname, cni_args, path), timeout=PLUGIN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CNIError(plugin, command, f"no answer within {PLUGIN_TIMEOUT:.0f} s") from None
    except OSError as error:
        raise CNIError(plugin, command, f"cannot run {executable}: {error.strerror}") from None
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            message = str(err.get("msg", "")) + (f": {err['details']}" if err.get("details") else "")
            code = err.get("code")
        except (ValueError, AttributeError):
            message = (out + " " + proc.stderr.decode("utf-8", "replace")).strip() or f"exit status {proc.returncode}"
            code = None
        raise CNIError(plugin, command, message or f"exit status {proc.returncode}", code)
    if command != "ADD":
        return None
    try:
        result = json.loads(out)
    except ValueError:
        raise CNIError(plugin, command, f"printed no JSON result: {out[:200]!r}") from None
    if not isinstance(result, dict):
        raise CNIError(plugin, command, "printed a result that is not a JSON object")
    return result


@dataclass(frozen=True)
class IPAMResult:
    address: ipaddress.IPv4Interface  # the pod's, with the subnet's prefix
    gateway: ipaddress.IPv4Address | None
    routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None], ...]
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def parse_ipam_result(result: dict, plugin: str = "ipam") -> IPAMResult:
    """An IPAM plugin's ADD result, cniVersion 0.3.x/0.4.0 (ips[] with "version") or 1.0.0: its first
    IPv4 address (IPv6 is not configured in the guest yet), its gateway, its IPv4 routes, its DNS."""
    version = result.get("cniVersion")
    if version not in ("0.3.0", "0.3.1", "0.4.0", "1.0.0"):
        raise CNIError(plugin, "ADD", f"result cniVersion {version!r}: kvmpod reads 0.3.x, 0.4.0 and 1.0.0 results")
    ips = result.get("ips")
    if not isinstance(ips, list):
        raise CNIError(plugin, "ADD", "result has no \"ips\" array")
    address = gateway = None
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict):
            raise CNIError(plugin, "ADD", f"result ips[{i}] is not an object")
        if version != "1.0.0" and ip.get("version") not in ("4", "6"):
            raise CNIError(plugin, "ADD", f"result ips[{i}].version is {ip.get('version')!r}; CNI {version} says "
                                          f"\"4\" or \"6\"")
        try:
            if "/" not in str(ip.get("address")):
                raise ValueError("no prefix")
            candidate = ipaddress.ip_interface(ip.get("address"))
            gw = ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None
        except (ValueError, TypeError):
            raise CNIError(plugin, "ADD", f"result ips[{i}] is not an address with its prefix (10.1.0.2/24) and a gateway: {ip!r}") from None
        if candidate.version == 4 and address is None:
            address, gateway = candidate, gw
    if address is None:
        raise CNIError(plugin, "ADD", "result has no IPv4 address; kvmpod configures IPv4 guests")
    if address.network.prefixlen > 30:
        raise CNIError(plugin, "ADD", f"{address} leaves no room for the host side; give the range a /30 or wider")
    routes = []
    for j, route in enumerate(result.get("routes") or []):
        try:
            dst = ipaddress.ip_network(route["dst"])
            gw = ipaddress.ip_address(route["gw"]) if route.get("gw") else None
        except (ValueError, TypeError, KeyError):
            raise CNIError(plugin, "ADD", f"result routes[{j}] is not a route: {route!r}") from None
        if dst.version == 4:
            routes.append((dst, gw))
    dns = result.get("dns") or {}
    nameservers = tuple(str(n) for n in dns.get("nameservers") or [] if isinstance(n, str))
    search = tuple(str(s) for s in dns.get("search") or [] if isinstance(s, str))
    return IPAMResult(address, gateway, tuple(routes), nameservers, search)
