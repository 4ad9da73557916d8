"""`--port NAME:HOSTPORT` (rkt's flag) and the pod manifest's `ports` ([{name, hostPort}]): which app
port each host port reaches, checked before the pod boots.

NAME is the name of a port an app declares (`ports` in its image manifest or in the pod manifest's
app; an OCI image's `8080/tcp` is named `8080-tcp`). A forward needs a network the host can reach the
pod on (rkt's GetForwardableNet: the first network with ipMasq, else the last), so a pod on `--net
none` cannot have one. The host port must be free: nothing bound to it on this host and no other
pod's rule for it; `kvmpod run` then keeps it bound (without listening) while the pod lives, so no
host process takes it from under the forward, as podman's conmon does.
"""

import re
import socket
from dataclasses import dataclass

from ...pod.problems import InvalidInput, Problem


@dataclass(frozen=True)
class AppPort:
    app: str
    name: str
    protocol: str
    port: int
    socket_activated: bool = False


@dataclass(frozen=True)
class PortForward:
    name: str
    app: str
    protocol: str
    host_port: int
    pod_port: int
    field: str


def parse_port_flags(values: list[str] | None) -> list[tuple[str, int]]:
    pairs, problems = [], []
    for value in values or []:
        name, colon, port = value.rpartition(":")
        if not colon or not name or not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(Problem("--port", f"{value!r}: give NAME:HOSTPORT, NAME an app's port name and "
                                              f"HOSTPORT 1-65535, e.g. http:8080"))
            continue
        pairs.append((name, int(port)))
    if problems:
        raise InvalidInput(problems)
    return pairs


def resolve_forwards(wanted: list[tuple[str, int, str]], app_ports: list[AppPort],
                     forwardable: bool) -> list[PortForward]:
    """(name, host port, field) against the apps' ports; InvalidInput for every problem."""
    problems, forwards = [], []
    known = ", ".join(sorted({f"{p.name} ({p.app} {p.protocol}/{p.port})" for p in app_ports})) or "none"
    taken: dict[tuple[str, int], str] = {}
    for name, host_port, field in wanted:
        matches = [p for p in app_ports if p.name == name]
        if not matches:
            problems.append(Problem(field, f"{name!r} is not a port of any app (the apps' ports: {known}); "
                                           f"name a port from the image or manifest"))
            continue
        if len({(p.app, p.protocol, p.port) for p in matches}) > 1:
            apps = ", ".join(sorted({p.app for p in matches}))
            problems.append(Problem(field, f"{name!r} is a port of more than one app ({apps}); rename one"))
            continue
        port = matches[0]
        key = (port.protocol, host_port)
        if key in taken:
            problems.append(Problem(field, f"host port {port.protocol}/{host_port} is also forwarded to "
                                           f"{taken[key]!r}; each host port reaches one app port"))
            continue
        taken[key] = name
        # a socket-activated port named in the pod manifest's ports[] listens in the guest on the hostPort
        # (guest.app_sockets); every other port on its own
        pod_port = host_port if port.socket_activated and field.startswith("ports[") else port.port
        forwards.append(PortForward(name, port.app, port.protocol, host_port, pod_port, field))
    if forwards and not forwardable:
        problems.append(Problem(forwards[0].field, "the pod has no network the host can forward to (--net none?); "
                                                   "give it a network, e.g. --net default"))
    if problems:
        raise InvalidInput(problems)
    return forwards


def _dnat_in_use(table_text: str, protocol: str, port: int) -> bool:
    return re.search(rf"\b{protocol} dport {port} dnat to\b", table_text) is not None


def reserve_ports(forwards: list[PortForward], table_text: str = "") -> list[socket.socket]:
    """Bind every host port (0.0.0.0, the forward's protocol) and keep it; InvalidInput when one is in use
    on this host or forwarded to another pod (its rule in kvmpod's table)."""
    held, problems = [], []
    for f in forwards:
        if _dnat_in_use(table_text, f.protocol, f.host_port):
            problems.append(Problem(f.field, f"host port {f.protocol}/{f.host_port} is already forwarded to another "
                                             f"pod (nft list table ip kvmpod); pick another HOSTPORT"))
            continue
        kind = socket.SOCK_STREAM if f.protocol == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind(("0.0.0.0", f.host_port))
        except OSError as error:
            sock.close()
            problems.append(Problem(f.field, f"host port {f.protocol}/{f.host_port} is in use on this host "
                                             f"({error.strerror}); pick another HOSTPORT"))
            continue
        held.append(sock)
    if problems:
        for sock in held:
            sock.close()
        raise InvalidInput(problems)
    return held


def app_ports(pod, image_apps: dict) -> list[AppPort]:
    """Every app's declared ports: the pod manifest's `app` when it has one, else its image's
    (`image_apps`: pod.image_manifests.load_image_apps' {app: ImageApp})."""
    ports = []
    for app in pod.apps:
        section = app.app if app.app is not None else getattr(image_apps.get(app.name), "section", None)
        for port in getattr(section, "ports", ()) or ():
            ports.append(AppPort(app.name, port.name, port.protocol, port.port, port.socket_activated))
    return ports


def wanted_forwards(port_flags: list[str] | None, pod) -> list[tuple[str, int, str]]:
    """(name, host port, field) from --port and the pod manifest's ports[] (the manifest form of --port)."""
    wanted = [(name, port, "--port") for name, port in parse_port_flags(port_flags)]
    wanted += [(p.name, p.host_port, f"ports[{i}]") for i, p in enumerate(pod.ports)]
    return wanted
