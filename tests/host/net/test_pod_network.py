"""A pod's networks set up and torn down for real (taps, addresses, host-local, nftables) inside a
network namespace of the test's own (`unshare --net`), and teardown from a recorded state."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None
                                or not os.access("/usr/lib/cni/host-local", os.X_OK),
                                reason="needs root, nft and containernetworking-plugins")
GENERATOR = str(Path(__file__).resolve().parents[3] / "generator")
UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"

PRELUDE = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from kvmpod.host.net import pod_network, net_configs
from kvmpod.host.net.port_forwards import PortForward
pod_path, data = sys.argv[2], sys.argv[3]
UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
# a new namespace inherits the host's IPv4 forwarding: start from the kernel's default (off) in this
# private one, so the test sees setup turn it on whatever the host's own setting is
with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
    f.write("0")

def conf(name, typ, subnet, **extra):
    c = {"cniVersion": "1.0.0", "name": name, "type": typ,
         "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data, "routes": [{"dst": "0.0.0.0/0"}]}}
    c.update(extra)
    return net_configs._check_config(c, "test")

def snapshot():
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    store = sorted(os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs if f[0].isdigit())
    fwd = open("/proc/sys/net/ipv4/ip_forward").read().strip()
    return {"links": links, "addrs": addrs, "routes": routes, "rules": rules, "store": store, "ip_forward": fwd}
"""

SETUP = PRELUDE + r"""
configs = [conf("default", "ptp", "10.88.0.0/24", ipMasq=True),
           conf("lan", "bridge", "10.89.0.0/24", bridge="kvbr-test", isGateway=True)]
requests = [net_configs.NetRequest("default"), net_configs.NetRequest("lan")]
forwards = [PortForward("http", "web", "tcp", 8080, 80, "--port")]
said = []
forward_before = open("/proc/sys/net/ipv4/ip_forward").read().strip()
result = pod_network.setup(pod_path, UUID, configs, requests, forwards, said.append)
up = snapshot()
up["forward_before"] = forward_before
up["networks"] = [[n.tap, str(n.host_ip), str(n.guest_ip), n.prefix, str(n.gateway)] for n in result.networks]
up["localnet"] = open(f"/proc/sys/net/ipv4/conf/{result.networks[0].tap}/route_localnet").read().strip()
up["said"] = said
if sys.argv[4] == "teardown":
    up["problems"] = pod_network.teardown(pod_path)
    up["again"] = pod_network.teardown(pod_path)
    up["down"] = snapshot()
print(json.dumps(up))
"""


def run(script: str, tmp_path: Path, *extra: str) -> dict:
    pod = tmp_path / "pod"
    pod.mkdir(exist_ok=True)
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", script, GENERATOR, str(pod),
                           str(tmp_path / "ipam"), *extra], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_setup_wires_ptp_and_bridge_as_rkt_kvm_did_and_teardown_leaves_nothing(tmp_path: Path):
    r = run(SETUP, tmp_path, "teardown")
    tap0, tap1 = "kp6733c3e4n0", "kp6733c3e4n1"
    assert r["networks"] == [[tap0, "10.88.0.1", "10.88.0.2", 24, "10.88.0.1"],
                             [tap1, "10.89.0.1", "10.89.0.2", 24, "10.89.0.1"]]
    assert f"{tap0}    inet 10.88.0.1/32" in r["addrs"].replace(":", "") or "10.88.0.1/32" in r["addrs"]
    assert "10.88.0.2 dev " + tap0 in r["routes"]
    assert f"{tap1}" in r["links"] and "master kvbr-test" in r["links"]
    assert "10.89.0.1/24" in r["addrs"] and "kvbr-test" in r["addrs"]
    assert "dnat to 10.88.0.2:80" in r["rules"] and "ip saddr 10.88.0.2" in r["rules"]
    assert "ip saddr 10.89.0.2" not in r["rules"]  # lan has no ipMasq
    assert [os.path.basename(p) for p in r["store"]] == ["10.88.0.2", "10.89.0.2"]
    assert r["ip_forward"] == "1" and r["localnet"] == "1"
    # a new network namespace inherits the host's ip_forward (devconf_inherit_init_net=0): when another
    # run already enabled it on the host, there is nothing to enable, and nothing to say
    assert any("ip_forward=1" in s for s in r["said"]) == (r["forward_before"] == "0"), r["said"]
    assert any("made bridge kvbr-test" in s for s in r["said"])
    # teardown: no tap, no chain, no reservation; the bridge is the network's and stays (as CNI's)
    assert r["problems"] == [] and r["again"] == []
    down = r["down"]
    assert tap0 not in down["links"] and tap1 not in down["links"] and "kvbr-test" in down["links"]
    assert UUID not in down["rules"] and "dnat" not in down["rules"] and "kvmpod" not in down["rules"]
    assert down["store"] == []
    state = json.loads((tmp_path / "pod" / "net.json").read_text())
    assert state["torn_down"] and all(n["released"] for n in state["networks"])


KILLED = SETUP.replace('if sys.argv[4] == "teardown":', 'os._exit(0) if sys.argv[4] == "kill" else None\nif False:')
TEARDOWN = PRELUDE + r"""
before = snapshot()
problems = pod_network.teardown(pod_path)
print(json.dumps({"before": before, "problems": problems, "after": snapshot()}))
"""


def test_teardown_from_the_recorded_state_after_the_setting_process_died(tmp_path: Path):
    """As kvmpod gc does for a SIGKILLed kvmpod run: a new process (here a new namespace holding
    what the dead one made is simulated by making it again in one namespace) undoes it from net.json."""
    script = SETUP.replace('if sys.argv[4] == "teardown":', 'if True:\n    pass\nif False:')
    script += "\nexec(compile(" + repr(TEARDOWN.split(PRELUDE)[1]) + ", 'gc', 'exec'))\n"
    r = run(script, tmp_path, "gc")
    assert "kp6733c3e4n0" in r["before"]["links"] and r["before"]["store"]
    assert r["problems"] == []
    assert "kp6733c3e4n0" not in r["after"]["links"] and r["after"]["store"] == []
    assert UUID not in r["after"]["rules"]


FAIL_SECOND = PRELUDE + r"""
configs = [conf("default", "ptp", "10.88.0.0/24", ipMasq=True), conf("tiny", "ptp", "10.90.0.0/30")]
requests = [net_configs.NetRequest("default"), net_configs.NetRequest("tiny")]
# fill the tiny network's one address so the pod's ADD fails after default's tap exists
from kvmpod.host.net import cni
cni.invoke("ADD", configs[1].conf, container_id="someone-else", ifname="eth0")
try:
    pod_network.setup(pod_path, UUID, configs, requests, [], lambda s: None)
    print(json.dumps({"error": None}))
except cni.CNIError as e:
    print(json.dumps({"error": str(e), "after": snapshot()}))
"""


def test_a_failed_setup_undoes_what_it_made(tmp_path: Path):
    r = run(FAIL_SECOND, tmp_path)
    assert "no IP addresses available" in r["error"]
    assert "kp6733c3e4n0" not in r["after"]["links"] and UUID not in r["after"]["rules"]
    assert [os.path.basename(p) for p in r["after"]["store"]] == ["10.90.0.2"]  # only the other container's


def test_recorded_addresses_are_shown_until_torn_down(tmp_path: Path):
    from kvmpod.host.net.pod_network import recorded_addresses, write_state

    state = {"pod": UUID, "networks": [{"name": "default", "address": "172.16.28.2/24", "ifname": "eth0",
                                        "tap": "kp6733c3e4n0"}], "torn_down": False}
    write_state(str(tmp_path), state)
    assert recorded_addresses(str(tmp_path)) == [{"network": "default", "address": "172.16.28.2/24",
                                                  "interface": "eth0", "tap": "kp6733c3e4n0"}]
    write_state(str(tmp_path), {**state, "torn_down": True})
    assert recorded_addresses(str(tmp_path)) == []
    assert recorded_addresses(str(tmp_path / "none")) == []
