"""kvmpod run's networks end to end: real pods under QEMU, wired as rkt's KVM flavour wired them, all
inside network namespaces this test makes (the machine's own interfaces, rules and IPAM store are
never touched).

Namespace H plays this host (kvmpod runs there, so its taps, bridge, nftables table and ip_forward
live there); namespace P plays another host, joined to H by a veth (H 10.200.0.1, P 10.200.0.2).
Both run a busybox httpd. Three pods, side by side:
- pod A: `--net default,lan` (a ptp and a bridge network from the test's KVMPOD_NET_DIR, host-local
  with a private dataDir), `--port http:8080`, `--dns`, `--hostname`; its client app fetches from
  H's server on the default network's host side and from P's through the masquerade, and records its
  interfaces, resolv.conf, hostname and hosts; it ends by itself when the test says so;
- pod B: `--net default --port http:8081`, ended with `kvmpod stop`;
- pod C: `--net default --port http:8082`, its `kvmpod run` SIGKILLed once the VM started, then
  `kvmpod gc`.
While A and B run, the test fetches each forwarded port from P (H's address) and from H (127.0.0.1).
After each end: nothing of that pod in H's `ip link`, `nft list ruleset` or the IPAM store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from .conftest import BootState, module_boot
from .kvmpod_guest import GENERATOR_SRC, busybox_rootfs, kept_dir, pod_uuid, write_json

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 900.0
HTTP_PORT = 8000  # the apps' httpd in the guest
APPLETS = ("sh", "cat", "echo", "sleep", "httpd", "wget", "ip", "hostname", "kill", "mkdir", "touch", "test", "[")


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class NetState(BootState):
    LABEL: ClassVar[str] = "net"
    host_ns: str = ""
    peer_ns: str = ""
    ipam: Path | None = None
    pods: Path | None = None
    uuids: dict[str, str] = field(default_factory=dict)
    seen: dict[str, object] = field(default_factory=dict)  # what the test observed, for the tests to judge
    rcs: dict[str, int | None] = field(default_factory=dict)

    def output_dir(self) -> Path | None:
        return self.logs

    def where(self) -> str:
        return f"(logs, run.*.stderr and the pod directories kept in {self.logs})"


def _web_app(name: str, text: str, until: str | None = None) -> dict:
    """An httpd serving `text`; with `until`, it ends (exit 0) when that file appears in /out."""
    serve = f"mkdir -p /www; echo '{text}' > /www/index.html; "
    if until:
        script = serve + (f"httpd -f -p {HTTP_PORT} -h /www & while [ ! -e /out/{until} ]; do sleep 1; done; "
                          f"kill $!; exit 0")
        mounts = [{"volume": "out", "path": "/out"}]
    else:
        script, mounts = serve + f"exec httpd -f -p {HTTP_PORT} -h /www", []
    return {"name": name, "app": {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0",
                                  "ports": [{"name": "http", "protocol": "tcp", "port": HTTP_PORT}]},
            "mounts": mounts}


CLIENT = """
n=0; until wget -q -O /out/from-host.txt http://172.16.28.1:8000/hello.txt || [ $n -ge 120 ]; do sleep 1; n=$((n+1)); done
n=0; until wget -q -O /out/from-peer.txt http://10.200.0.2:8001/peer.txt || [ $n -ge 60 ]; do sleep 1; n=$((n+1)); done
ip -o -4 addr > /out/addrs.txt; ip -o link > /out/links.txt; ip route > /out/routes.txt
cat /etc/resolv.conf > /out/resolv.txt; hostname > /out/hostname.txt; cat /etc/hosts > /out/hosts.txt
touch /out/client.done
"""


def _kvmpod(state: NetState, *args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(GENERATOR_SRC), "KVMPOD_PODS_DIR": str(state.pods),
           "KVMPOD_NET_DIR": str(state.logs / "net.d")}
    env.pop("KVMPOD_NET", None)
    return subprocess.Popen(["ip", "netns", "exec", state.host_ns, sys.executable, "-m", "kvmpod.host.cli", *args],
                            env=env, **popen)


def _kvmpod_done(state: NetState, *args: str) -> subprocess.CompletedProcess:
    proc = _kvmpod(state, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _start_pod(state: NetState, label: str, apps: list[dict], volumes: list[dict], *flags: str) -> subprocess.Popen:
    uuid = state.uuids[label] = pod_uuid()
    manifest = write_json(state.logs / f"pod-{label}.json", {"acKind": "PodManifest", "acVersion": "0.8.11",
                                                             "apps": apps, "volumes": volumes})
    args = ["run", "--manifest", str(manifest), "--uuid", uuid, *flags]
    for app in apps:
        args += ["--app", f"{app['name']}={busybox_rootfs(state.logs / 'images' / label / app['name'], APPLETS)}"]
    stderr = open(state.logs / f"run.{label}.stderr", "w")
    return _kvmpod(state, *args, stdout=open(state.logs / f"run.{label}.stdout", "w"), stderr=stderr)


FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())"


def _fetch(ns: str, url: str) -> str | None:
    # Python's urllib, not the host's busybox wget: Debian 12's static busybox wget segfaults here
    proc = sh(sys.executable, "-c", FETCH, url, ns=ns, check=False, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _wait(predicate, timeout: float, what: str, procs: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for label, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"kvmpod run of pod {label} ended ({proc.returncode}) while waiting for {what}")
        time.sleep(2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _leftovers(state: NetState, uuid: str) -> dict[str, object]:
    """What of the pod is in H: links named for it, nftables chains, IPAM reservations."""
    tap_prefix = "kp" + uuid.replace("-", "")[:8]
    links = [line.split(":")[1].strip() for line in sh("ip", "-o", "link", ns=state.host_ns).stdout.splitlines()]
    rules = sh("nft", "list", "ruleset", ns=state.host_ns).stdout
    store = [str(p) for p in state.ipam.rglob("*") if p.is_file() and uuid in p.read_text()]
    return {"links": [link.split("@")[0] for link in links if link.startswith(tap_prefix)],
            "rules": uuid in rules, "store": store}


def _snapshot(state: NetState, label: str, uuid: str) -> None:
    state.seen[f"{label}.leftovers"] = _leftovers(state, uuid)


def _setup_namespaces(state: NetState) -> list[subprocess.Popen]:
    tag = f"{os.getpid() % 100000}"
    state.host_ns, state.peer_ns = f"kvmpod-e2e-h{tag}", f"kvmpod-e2e-p{tag}"
    sh("ip", "netns", "add", state.host_ns)
    sh("ip", "netns", "add", state.peer_ns)
    veth = f"kvp{tag}"
    sh("ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b", ns=state.host_ns)
    sh("ip", "link", "set", veth + "b", "netns", state.peer_ns, ns=state.host_ns)
    for ns, dev, addr in ((state.host_ns, veth + "a", "10.200.0.1/24"), (state.peer_ns, veth + "b", "10.200.0.2/24")):
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
    www_h, www_p = state.logs / "www-host", state.logs / "www-peer"
    www_h.mkdir()
    www_p.mkdir()
    (www_h / "hello.txt").write_text("hello from the host side\n")
    (www_p / "peer.txt").write_text("hello from another host\n")
    servers = [subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", port, "-h", str(www)])
               for ns, port, www in ((state.host_ns, "8000", www_h), (state.peer_ns, "8001", www_p))]
    # no route from P to the pods' subnet: an app reaches P only through H's masquerade
    return servers


def _net_dir(state: NetState) -> None:
    state.ipam = state.logs / "ipam"
    net_d = state.logs / "net.d"
    net_d.mkdir()
    write_json(net_d / "10-default.conf", {
        "cniVersion": "1.0.0", "name": "default", "type": "ptp", "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": "172.16.28.0/24", "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": str(state.ipam)}})
    write_json(net_d / "20-lan.conflist", {"cniVersion": "0.4.0", "name": "lan", "plugins": [
        {"type": "bridge", "bridge": "kvbr-e2e", "isGateway": True,
         "ipam": {"type": "host-local", "subnet": "10.201.0.0/24", "dataDir": str(state.ipam)}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})


def _scenario(state: NetState, tmp: Path) -> Iterator[None]:
    state.pods = state.logs / "pods"
    state.install = "the stage1 of kvmpod run (this checkout's .deb)"
    servers: list[subprocess.Popen] = []
    procs: dict[str, subprocess.Popen] = {}
    root_links_before = set(sh("ip", "-o", "link").stdout.split())
    try:
        servers = _setup_namespaces(state)
        _net_dir(state)
        out = state.logs / "out-a"
        out.mkdir()
        volumes = [{"name": "out", "kind": "host", "source": str(out)}]
        client = {"name": "client", "app": {"exec": ["/bin/sh", "-c", CLIENT], "user": "0", "group": "0"},
                  "mounts": [{"volume": "out", "path": "/out"}]}
        started = time.monotonic()
        procs["a"] = _start_pod(state, "a", [_web_app("web", "pod A web", until="stop"), client], volumes,
                                "--net", "default,lan", "--port", "http:8080", "--dns", "10.200.0.53",
                                "--dns-search", "example.test", "--hostname", "pod-a.example.test")
        procs["b"] = _start_pod(state, "b", [_web_app("web", "pod B web")], [], "--net", "default",
                                "--port", "http:8081")
        procs["c"] = _start_pod(state, "c", [_web_app("web", "pod C web")], [], "--port", "http:8082")
        # pod C: SIGKILL its kvmpod run once the VM runs; what it set up stays until kvmpod gc
        c_state = state.pods / state.uuids["c"] / "state.json"
        _wait(lambda: c_state.is_file() and "hypervisor_pid" in c_state.read_text(), RUN_TIMEOUT,
              "pod C's VM to start", {"c": procs["c"]})
        procs["c"].kill()
        state.rcs["c"] = procs["c"].wait()
        del procs["c"]
        _snapshot(state, "c-killed", state.uuids["c"])
        gc_deadline = time.monotonic() + 60  # the VM dies with kvmpod run (PDEATHSIG), a moment later
        while True:
            state.seen["c.gc"] = _kvmpod_done(state, "gc").stdout
            if "removed" in state.seen["c.gc"] or time.monotonic() > gc_deadline:
                break
            time.sleep(1)
        _snapshot(state, "c-gc", state.uuids["c"])
        # pods A and B: their forwarded ports from the other host and from this one's loopback
        _wait(lambda: (out / "client.done").exists() and _fetch(state.peer_ns, "http://10.200.0.1:8081/"),
              RUN_TIMEOUT, "pod A's client and pod B's web", procs)
        state.seconds = time.monotonic() - started
        for port in (8080, 8081):
            state.seen[f"peer:{port}"] = _fetch(state.peer_ns, f"http://10.200.0.1:{port}/")
            state.seen[f"loopback:{port}"] = _fetch(state.host_ns, f"http://127.0.0.1:{port}/")
        state.seen["list"] = _kvmpod_done(state, "list").stdout
        for label in ("a", "b"):
            state.seen[f"{label}.status"] = json.loads(_kvmpod_done(state, "status", state.uuids[label], "--json").stdout)
        state.seen["ruleset"] = sh("nft", "list", "ruleset", ns=state.host_ns).stdout
        state.seen["h.links"] = sh("ip", "-o", "link", ns=state.host_ns).stdout
        state.seen["port-in-use"] = _kvmpod_done(state, "run", "--manifest", str(state.logs / "pod-b.json"),
                                                 "--port", "http:8081", "--app",
                                                 f"web={state.logs / 'images' / 'b' / 'web'}").stderr
        # pod A ends by itself; pod B by kvmpod stop
        (out / "stop").write_text("")
        state.rcs["a"] = procs["a"].wait(timeout=RUN_TIMEOUT)
        del procs["a"]
        _snapshot(state, "a-ended", state.uuids["a"])
        stop = _kvmpod_done(state, "stop", state.uuids["b"])
        state.seen["b.stop"] = (stop.returncode, stop.stderr)
        state.rcs["b"] = procs["b"].wait(timeout=RUN_TIMEOUT)
        del procs["b"]
        _snapshot(state, "b-stopped", state.uuids["b"])
        state.seen["ipam.files"] = sorted(p.name for p in state.ipam.rglob("*") if p.is_file())
        state.seen["root.links.new"] = sorted(set(sh("ip", "-o", "link").stdout.split()) - root_links_before)
        state.seen["root.rules"] = sh("nft", "list", "ruleset").stdout
        state.accelerator = "tcg" if "-accel\ntcg" in "\n".join(
            json.loads((state.pods / state.uuids["a"] / "argv.json").read_text())) else "kvm"
        yield
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in servers:
            server.kill()
            server.wait()
        for ns in (state.host_ns, state.peer_ns):
            if ns:
                sh("ip", "netns", "del", ns, check=False)  # its taps, bridge and nftables go with it


@pytest.fixture(scope="module")
def net(request: pytest.FixtureRequest):
    yield from module_boot(request, NetState(logs=kept_dir("net")), _scenario)


def test_an_app_reaches_the_host_side_of_the_default_network_and_another_host(net: NetState) -> None:
    net.require()
    assert net.read("out-a/from-host.txt") == "hello from the host side\n", net.where()
    assert net.read("out-a/from-peer.txt") == "hello from another host\n", net.where()  # masqueraded


def test_two_networks_give_two_nics(net: NetState) -> None:
    net.require()
    addrs = net.read("out-a/addrs.txt")
    assert "eth0" in addrs and "172.16.28." in addrs and "eth1" in addrs and "10.201.0." in addrs, addrs
    assert "default via 172.16.28.1 dev eth0" in net.read("out-a/routes.txt")


def test_dns_and_hostname_reach_the_apps(net: NetState) -> None:
    net.require()
    resolv = net.read("out-a/resolv.txt")
    assert "nameserver 10.200.0.53" in resolv and "search example.test" in resolv
    assert net.read("out-a/hostname.txt").strip() == "pod-a.example.test"
    assert "127.0.1.1\tpod-a.example.test pod-a" in net.read("out-a/hosts.txt")


def test_forwarded_ports_from_another_host_and_from_loopback(net: NetState) -> None:
    net.require()
    assert net.seen["peer:8080"] == "pod A web" and net.seen["loopback:8080"] == "pod A web", net.seen
    assert net.seen["peer:8081"] == "pod B web" and net.seen["loopback:8081"] == "pod B web", net.seen


def test_two_pods_at_once_get_distinct_addresses_shown_by_list_and_status(net: NetState) -> None:
    net.require()
    a = {n["network"]: n["address"] for n in net.seen["a.status"]["networks"]}
    b = {n["network"]: n["address"] for n in net.seen["b.status"]["networks"]}
    assert set(a) == {"default", "lan"} and set(b) == {"default"}
    assert a["default"] != b["default"] and a["default"].startswith("172.16.28.")
    assert f"default:{a['default']},lan:{a['lan']}" in net.seen["list"] and f"default:{b['default']}" in net.seen["list"]
    assert "kp" in net.seen["h.links"] and "kvbr-e2e" in net.seen["h.links"]


def test_a_port_in_use_is_refused_before_the_pod_boots(net: NetState) -> None:
    net.require()
    assert "--port: host port tcp/8081 is" in net.seen["port-in-use"], net.seen["port-in-use"]


def test_nothing_of_a_pod_remains_after_it_ends_is_stopped_or_killed_and_collected(net: NetState) -> None:
    net.require()
    assert net.rcs["a"] == 0, net.where()
    assert net.seen["b.stop"][0] == 0 and net.rcs["b"] is not None, (net.seen["b.stop"], net.rcs)
    killed = net.seen["c-killed.leftovers"]
    assert killed["links"] and killed["rules"] and killed["store"], killed  # SIGKILL leaves them for gc
    assert f"removed {net.uuids['c']}" in net.seen["c.gc"]
    nothing = {"links": [], "rules": False, "store": []}
    for label in ("a-ended", "b-stopped", "c-gc"):
        assert net.seen[f"{label}.leftovers"] == nothing, (label, net.seen[f"{label}.leftovers"])
    assert [f for f in net.seen["ipam.files"] if f[0].isdigit()] == [], net.seen["ipam.files"]


def test_this_machines_own_network_was_not_touched(net: NetState) -> None:
    net.require()
    assert not [w for w in net.seen["root.links.new"] if w.startswith("kp")], net.seen["root.links.new"]
    assert not any(u in net.seen["root.rules"] for u in net.uuids.values())
