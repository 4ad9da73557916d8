"""Known answers for the guest NICs' MACs: changing how a MAC is derived changes every pod's MACs
(DHCP leases, firewall rules, a guest's own config), so it must be a deliberate, visible decision.

The derivation (host/network.py's guest_mac): the first 6 bytes of SHA-256 of
"kvmpod-mac" NUL <canonical pod UUID> NUL <NIC index in decimal>, with the first byte's bit 0
cleared (unicast) and bit 1 set (locally administered). The table was computed once with coreutils'
sha256sum from that description (see independent_mac below), compared with guest_mac, and reviewed.
"""

import json
import shutil
import subprocess

import pytest

from kvmpod.host.cli import main
from kvmpod.host.net.nics import guest_mac

KNOWN = [
    ("6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e", 0, "be:2f:7d:45:8b:00"),
    ("6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e", 1, "9e:a6:c4:69:74:c7"),
    ("6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e", 7, "46:69:83:6c:7d:cb"),
    ("6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e", 15, "ca:1a:93:14:b6:2a"),
    ("00000000-0000-0000-0000-000000000000", 0, "8e:ae:32:be:98:6d"),
    ("00000000-0000-0000-0000-000000000000", 1, "6a:6f:9b:87:f2:ff"),
    ("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", 0, "06:52:ab:91:1c:7f"),
    ("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", 15, "1e:86:02:8b:d9:6a"),
]


def independent_mac(pod_uuid: str, index: int) -> str:
    """The documented derivation, by coreutils' sha256sum and shell arithmetic (not Python's hashlib)."""
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        pytest.fail("sha256sum is not installed; install the Debian package 'coreutils'")
    script = ('h=$(printf "kvmpod-mac\\0%s\\0%s" "$1" "$2" | sha256sum | cut -c1-12); '
              'printf "%02x:%s:%s:%s:%s:%s\\n" $(( (16#${h:0:2} & 0xfc) | 0x02 )) '
              '${h:2:2} ${h:4:2} ${h:6:2} ${h:8:2} ${h:10:2}')
    out = subprocess.run(["bash", "-c", script, "mac", pod_uuid, str(index)], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip()


@pytest.mark.parametrize("pod_uuid, index, mac", KNOWN)
def test_guest_mac_known_answers(pod_uuid: str, index: int, mac: str):
    assert guest_mac(pod_uuid, index) == mac


@pytest.mark.parametrize("pod_uuid, index, mac", KNOWN)
def test_known_answers_follow_the_documented_derivation(pod_uuid: str, index: int, mac: str):
    assert independent_mac(pod_uuid, index) == mac


def test_kvmpod_args_gives_the_known_macs_for_a_uuid_in_any_spelling(fs, capsys):
    """The CLI canonicalizes the UUID first: upper case or braces name the same pod, the same MACs."""
    fs.create_file("/pod.json", contents=json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11",
                                                      "apps": [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"}}], "volumes": []}))
    fs.create_file("/nets.json", contents=json.dumps(
        [{"tap": f"kvmpod{i}", "hostIP": f"10.{i}.0.1", "guestIP": f"10.{i}.0.2", "prefix": 24} for i in range(2)]))
    fs.create_file("/stage1/vmlinuz")
    fs.create_dir("/sys/module/kvm_pvm")

    assert main(["args", "--hypervisor", "qemu", "--manifest", "/pod.json", "--rootfs", "/stage1",
                 "--uuid", "{6733C3E4-5A57-4AC6-8E2A-5D8F6A6C1D2E}", "--networks", "/nets.json",
                 "--format", "json"]) == 0
    argv = json.loads(capsys.readouterr().out)
    assert [a for a in argv if ",mac=" in a] == ["virtio-net-pci,netdev=net0,mac=be:2f:7d:45:8b:00",
                                                 "virtio-net-pci,netdev=net1,mac=9e:a6:c4:69:74:c7"]
