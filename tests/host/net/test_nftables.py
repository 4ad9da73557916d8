"""kvmpod's nftables rules: as text, and loaded by the real nft (--check, and for real in a private
network namespace)."""

import ipaddress
import os
import shutil
import subprocess

import pytest

from kvmpod.host.net.nftables import Forward, Masquerade, NftError, chain_names, nft_load, pod_rules, teardown_rules

UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"
POD = ipaddress.IPv4Address("172.16.28.2")
SUBNET = ipaddress.IPv4Network("172.16.28.0/24")
needs_nft = pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="needs nft and root")


def rules() -> str:
    return pod_rules(UUID, [Masquerade(POD, SUBNET)], [Forward("tcp", 8080, POD, 80), Forward("udp", 5353, POD, 53)])


def test_rules_as_text():
    text = rules()
    pre, out, post = chain_names(UUID)
    assert pre == f"pod-{UUID}-pre"
    assert f"add rule ip kvmpod {pre} fib daddr type local tcp dport 8080 dnat to 172.16.28.2:80\n" in text
    assert f"add rule ip kvmpod {out} fib daddr type local udp dport 5353 dnat to 172.16.28.2:53\n" in text
    assert f"add rule ip kvmpod {post} ip saddr 127.0.0.0/8 ip daddr 172.16.28.2 tcp dport 80 masquerade\n" in text
    assert (f"add rule ip kvmpod {post} ip saddr 172.16.28.2 ip daddr != {{ 172.16.28.0/24, 224.0.0.0/4 }} "
            f"masquerade\n") in text
    assert "type nat hook prerouting priority dstnat" in text and "type nat hook output priority -100" in text
    assert pod_rules(UUID, [], []) == ""
    assert "dnat" not in pod_rules(UUID, [Masquerade(POD, SUBNET)], [])


@needs_nft
def test_real_nft_accepts_the_rules_and_the_teardown():
    nft_load(rules(), check=True)
    nft_load(teardown_rules(chain_names(UUID)), check=True)
    with pytest.raises(NftError) as error:
        nft_load("add rule ip kvmpod nochain tcp dport banana accept\n", check=True)
    assert "nft refused" in str(error.value)


SCRIPT = r"""
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from kvmpod.host.net import nftables as n
import ipaddress
uuid, other = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e", "11111111-2222-4333-8444-555555555555"
pod = ipaddress.IPv4Address("172.16.28.2")
for u in (uuid, other):
    n.nft_load(n.pod_rules(u, [n.Masquerade(pod, ipaddress.IPv4Network("172.16.28.0/24"))], [n.Forward("tcp", 8080, pod, 80)]))
print(subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout)
print("----")
n.nft_load(n.teardown_rules(n.chain_names(uuid)))
n.nft_load(n.teardown_rules(n.chain_names(uuid)))  # again: idempotent
print(subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout)
print("----")
n.remove_pod(n.chain_names(uuid))  # gone already: the other pod's chains keep the table
n.remove_pod(n.chain_names(other))  # the last pod's: the table goes too
print(subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout)
"""


@needs_nft
def test_loaded_and_removed_for_real_in_a_private_namespace(tmp_path):
    generator = os.path.join(os.path.dirname(__file__), "..", "..", "..", "generator")
    proc = subprocess.run(["unshare", "--net", "python3", "-c", SCRIPT, os.path.abspath(generator)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded, after, last = proc.stdout.split("----")
    assert loaded.count("dnat to 172.16.28.2:80") == 4 and f"chain pod-{UUID}-post" in loaded
    assert UUID not in after and "pod-11111111-2222-4333-8444-555555555555-pre" in after
    assert "kvmpod" not in last, last
