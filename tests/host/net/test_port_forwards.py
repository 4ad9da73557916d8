"""--port and the pod manifest's ports: names resolved against the apps' ports, host ports checked."""

import socket

import pytest

from kvmpod.host.net.port_forwards import (AppPort, PortForward, parse_port_flags, reserve_ports, resolve_forwards,
                                           wanted_forwards)
from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.problems import InvalidInput

PORTS = [AppPort("web", "http", "tcp", 80), AppPort("dns", "dns", "udp", 53), AppPort("sock", "act", "tcp", 9000, True)]


def messages(error: pytest.ExceptionInfo) -> str:
    return "\n".join(f"{p.field}: {p.message}" for p in error.value.problems)


def test_port_flags():
    assert parse_port_flags(["http:8080", "dns:5353"]) == [("http", 8080), ("dns", 5353)]
    assert parse_port_flags(None) == []
    for bad in ("http", "http:", ":80", "http:0", "http:65536", "http:eighty"):
        with pytest.raises(InvalidInput) as error:
            parse_port_flags([bad])
        assert "NAME:HOSTPORT" in messages(error)


def test_names_resolve_to_the_apps_ports():
    forwards = resolve_forwards([("http", 8080, "--port"), ("dns", 5353, "--port")], PORTS, forwardable=True)
    assert forwards == [PortForward("http", "web", "tcp", 8080, 80, "--port"),
                        PortForward("dns", "dns", "udp", 5353, 53, "--port")]


def test_a_socket_activated_port_of_the_manifest_listens_on_its_host_port():
    assert resolve_forwards([("act", 9100, "ports[0]")], PORTS, True)[0].pod_port == 9100
    assert resolve_forwards([("act", 9100, "--port")], PORTS, True)[0].pod_port == 9000


@pytest.mark.parametrize("wanted, forwardable, words", [
    ([("nope", 8080, "--port")], True, "not a port of any app (the apps' ports: act (sock tcp/9000), dns (dns udp/53), "
                                       "http (web tcp/80))"),
    ([("http", 8080, "--port"), ("http", 8080, "--port")], True, "also forwarded"),
    ([("http", 8080, "--port")], False, "no network the host can forward to"),
])
def test_refusals(wanted, forwardable, words):
    with pytest.raises(InvalidInput) as error:
        resolve_forwards(wanted, PORTS, forwardable)
    assert words in messages(error)


def test_a_name_two_apps_declare_differently_is_ambiguous():
    with pytest.raises(InvalidInput) as error:
        resolve_forwards([("http", 8080, "--port")], PORTS + [AppPort("other", "http", "tcp", 81)], True)
    assert "more than one app (other, web)" in messages(error)


def test_pod_manifest_ports_are_forwards_too():
    pod = parse_pod_manifest({"acKind": "PodManifest", "acVersion": "0.8.11",
                              "apps": [{"name": "web", "image": {"name": "x"}}],
                              "ports": [{"name": "http", "hostPort": 8080}]})
    assert wanted_forwards(["dns:5353"], pod) == [("dns", 5353, "--port"), ("http", 8080, "ports[0]")]


def test_a_port_in_use_or_forwarded_to_another_pod_is_refused_and_a_free_one_held():
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    port = busy.getsockname()[1]
    try:
        with pytest.raises(InvalidInput) as error:
            reserve_ports([PortForward("http", "web", "tcp", port, 80, "--port")])
        assert f"host port tcp/{port} is in use on this host" in messages(error)
    finally:
        busy.close()
    held = reserve_ports([PortForward("http", "web", "tcp", port, 80, "--port")])
    try:
        again = socket.socket()
        with pytest.raises(OSError):
            again.bind(("0.0.0.0", port))  # kept while the pod lives
        again.close()
    finally:
        for sock in held:
            sock.close()
    table = f"\t\tfib daddr type local tcp dport {port} dnat to 172.16.28.3:80\n"
    with pytest.raises(InvalidInput) as error:
        reserve_ports([PortForward("http", "web", "tcp", port, 80, "--port")], table)
    assert "already forwarded to another pod" in messages(error)
