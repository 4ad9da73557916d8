"""kvmpod's nftables rules: one table of its own, `ip kvmpod`, and in it each pod's own base chains
(`pod-<uuid>-pre`, `-out`, `-post`), so a pod's rules come and go as whole chains and never touch
another pod's or anybody else's rules (no `iptables`, no shared chain to edit by handle).

- masquerading (a network with `ipMasq`, as CNI's ip.SetupIPMasq): what the pod sends off its subnet
  (and not to multicast) leaves with the host's address;
- port forwarding (rkt's portfwd.go, in nftables): a host port's connections to any of the host's own
  addresses are DNATed to the pod, from other hosts in `prerouting` and from this host in `output`;
  connections from 127.0.0.1 are masqueraded too (the pod could not answer 127.0.0.1), and the tap
  gets `route_localnet` (taps.py), as rkt set it, so the kernel routes a 127.0.0.1 source out to it.

Rules go in with one `nft -f` (a batch: all or nothing). Teardown is a batch too, idempotent: `add
chain` (a no-op when it exists), `flush chain`, `delete chain`, so it removes what is there and does
not fail on what is gone (nft 1.0.6, Debian 12's, has no `destroy`).
"""

import contextlib
import fcntl
import ipaddress
import os
import subprocess
from dataclasses import dataclass

TABLE = "kvmpod"
LOCK = "/run/kvmpod/nft.lock"  # setups and teardowns one at a time, so the last teardown can drop the table
FAMILY = "ip"
NFT = "nft"
HOOKS = (("pre", "nat", "prerouting", "dstnat"), ("out", "nat", "output", "-100"),
         ("post", "nat", "postrouting", "srcnat"))


class NftError(Exception):
    pass


@dataclass(frozen=True)
class Masquerade:
    pod_ip: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network


@dataclass(frozen=True)
class Forward:
    protocol: str  # "tcp" or "udp"
    host_port: int
    pod_ip: ipaddress.IPv4Address
    pod_port: int


def chain_names(pod_uuid: str) -> list[str]:
    return [f"pod-{pod_uuid}-{suffix}" for suffix, *_ in HOOKS]


def pod_rules(pod_uuid: str, masquerades: list[Masquerade], forwards: list[Forward]) -> str:
    """The batch that makes the pod's chains; "" when the pod needs none."""
    if not masquerades and not forwards:
        return ""
    pre, out, post = chain_names(pod_uuid)
    lines = [f"add table {FAMILY} {TABLE}"]
    for (suffix, kind, hook, priority), name in zip(HOOKS, (pre, out, post)):
        lines.append(f"add chain {FAMILY} {TABLE} {name} {{ type {kind} hook {hook} priority {priority}; "
                     f"policy accept; comment \"kvmpod pod {pod_uuid}\"; }}")
    for f in forwards:
        dnat = f"fib daddr type local {f.protocol} dport {f.host_port} dnat to {f.pod_ip}:{f.pod_port}"
        lines.append(f"add rule {FAMILY} {TABLE} {pre} {dnat}")
        lines.append(f"add rule {FAMILY} {TABLE} {out} {dnat}")
        lines.append(f"add rule {FAMILY} {TABLE} {post} ip saddr 127.0.0.0/8 ip daddr {f.pod_ip} "
                     f"{f.protocol} dport {f.pod_port} masquerade")
    for m in masquerades:
        lines.append(f"add rule {FAMILY} {TABLE} {post} ip saddr {m.pod_ip} ip daddr != "
                     f"{{ {m.subnet}, 224.0.0.0/4 }} masquerade")
    return "\n".join(lines) + "\n"


def teardown_rules(chains: list[str]) -> str:
    lines = [f"add table {FAMILY} {TABLE}"]
    for name in chains:
        lines += [f"add chain {FAMILY} {TABLE} {name}", f"flush chain {FAMILY} {TABLE} {name}",
                  f"delete chain {FAMILY} {TABLE} {name}"]
    return "\n".join(lines) + "\n"


def nft_load(text: str, *, check: bool = False) -> None:
    """`nft -f -` (or `nft --check -f -`) with the batch on stdin; NftError with nft's words."""
    argv = [NFT] + (["--check"] if check else []) + ["-f", "-"]
    try:
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise NftError("nft is not installed; install the nftables package") from None
    if proc.returncode != 0:
        raise NftError(f"nft refused the rules: {proc.stderr.strip() or proc.stdout.strip()}")


@contextlib.contextmanager
def table_lock():
    os.makedirs(os.path.dirname(LOCK), mode=0o755, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_pod(text: str) -> None:
    with table_lock():
        nft_load(text)


def remove_pod(chains: list[str]) -> None:
    """The pod's chains gone; the table too when no other pod's chain is left in it (under the lock,
    so no other pod's setup runs between the look and the delete)."""
    with table_lock():
        nft_load(teardown_rules(chains))
        if "chain " not in table_text():
            nft_load(f"delete table {FAMILY} {TABLE}\n")


def table_text() -> str:
    """kvmpod's table as `nft list` prints it ("" when there is none)."""
    proc = subprocess.run([NFT, "list", "table", FAMILY, TABLE], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""
