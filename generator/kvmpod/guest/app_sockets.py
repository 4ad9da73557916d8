"""Socket-activated ports (pure): rkt 1.30's socket unit for an app's ports with
`socketActivated: true`.

`<app>.socket` listens in the guest on the pod's host port for that port name (the pod manifest's
ports[]), else on the app's own port, and hands its sockets to `<app>.service`, which requires it.
A socket unit is ordered before the service it names (systemd adds that), and is started by
sockets.target, so the sockets exist before the app starts whether or not anything connects.
"""

from _collections_abc import Callable

from ..pod.model import ExposedPort, Port
from .app_services import app_service
from .unitfile import DOCUMENTATION, GeneratedFile, Output, render_unit, requires_link, wants_link

_LISTEN = {"tcp": "ListenStream", "udp": "ListenDatagram"}


def app_socket(app_name: str) -> str:
    return f"{app_name}.socket"


def plan_app_socket(app_name: str, ports: tuple[Port, ...], exposed: tuple[ExposedPort, ...], manifest_path: str,
                    warn: Callable[[str], None]) -> list[Output]:
    activated = [p for p in ports if p.socket_activated]
    if not activated:
        return []
    host_ports = {p.name: p.host_port for p in exposed}
    listen = []
    for port in activated:
        number = host_ports.get(port.name)
        if number is None:
            warn(f"app {app_name!r}: no pod ports[] entry for socket-activated port {port.name!r}; listening on its "
                 f"own port {port.port}")
            number = port.port
        listen.append((_LISTEN[port.protocol], str(number)))
    unit, service = app_socket(app_name), app_service(app_name)
    text = render_unit([
        ("Unit", [("Description", f"kvmpod app {app_name}: socket-activated ports"), ("Documentation", DOCUMENTATION),
                  ("SourcePath", manifest_path)]),
        ("Socket", [("BindIPv6Only", "both"), ("Service", service), *listen]),
    ])
    return [GeneratedFile(unit, text), wants_link("sockets.target", unit), requires_link(service, unit)]
