"""kvmpod run's networks, from its flags to the pod's taps: checked before anything is written (--net,
--port, --dns, --dns-search, --hostname, or the networks given with --networks/--cni-result), then set up
before the VM boots (pod_network.setup: taps, addresses, rules, recorded in the pod directory first).

What the guest and its apps must read of them (the NICs' description for /etc/kvmpod/networks.json,
resolv.conf, hosts, hostname) comes back as data, `GuestNetFiles`: the pods room writes it into the
pod's root (pods/stage.py), which this room may not import. pod_commands joins the two.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from ...pod.image_manifests import load_image_apps
from ...pod.model import Pod
from ...pod.problems import InvalidInput, Problem
from . import nftables, pod_network
from .guest_names import check_hostname, hosts_file, resolv_conf
from .net_configs import load_configs, parse_net_flag
from .nics import Network, guest_description
from .port_forwards import app_ports, reserve_ports, resolve_forwards, wanted_forwards
from .run_flags import given, net_values


@dataclass(frozen=True)
class GuestNetFiles:
    """What to write into the pod's root for its networks (nothing of it written here)."""
    description: list[dict] | None = None  # networks.json for the guest's NICs; None: no network made here
    guest_files: dict[str, bytes] = field(default_factory=dict)  # the guest's /etc (resolv.conf, hostname, hosts)
    app_files: dict[str, bytes] = field(default_factory=dict)  # every app's /etc (resolv.conf, hosts)


class PodNet:
    """One pod's networking: checked from the options before anything is written, set up by `up`."""

    def __init__(self, opts: argparse.Namespace, pod: Pod, pod_uuid: str, external: bool) -> None:
        self.pod, self.pod_uuid = pod, pod_uuid
        self.requests = [] if external else parse_net_flag(net_values(opts))
        self.configs = load_configs(self.requests) if self.requests else []
        self.port_flags = opts.port
        self.dns, self.dns_search = opts.dns, opts.dns_search
        self.hostname = check_hostname(opts.hostname)
        resolv_conf(self.dns, self.dns_search)  # a bad --dns is named now, before anything is written
        wanted = wanted_forwards(self.port_flags, pod)  # and a bad --port (names are checked against the
        if wanted and not self.configs and not external:  # images once they are installed, in `up`)
            raise InvalidInput([Problem(wanted[0][2], "the pod has no network to forward to (--net none); give it "
                                                      "a network, e.g. --net default")])
        self.networks: tuple[Network, ...] = ()
        self.sockets: list = []

    @classmethod
    def from_options(cls, opts: argparse.Namespace, pod: Pod, pod_uuid: str, *, external: bool) -> "PodNet | None":
        """None when there is nothing to do: networks made by the caller (`external`) and no
        --dns, --dns-search or --hostname."""
        if external:
            flags = [f for f in given(opts) if f in ("--net", "--port")]
            if flags:
                raise InvalidInput([Problem(flags[0], "cannot be given with --networks/--cni-result (networks "
                                                      "made by the caller); give one or the other")])
            if not opts.dns and not opts.dns_search and not opts.hostname:
                return None
        return cls(opts, pod, pod_uuid, external)

    def up(self, pod_path: str, rootfs: str, say: Callable[[str], None]) -> GuestNetFiles:
        """The ports reserved and the networks set up for the pod at `pod_path` (whose apps are installed
        in `rootfs`); what the guest must read of them, to be staged into `rootfs`."""
        image_apps = load_image_apps(self.pod, rootfs, required=False)
        forwards = resolve_forwards(wanted_forwards(self.port_flags, self.pod), app_ports(self.pod, image_apps),
                                    forwardable=bool(self.configs))
        self.sockets = reserve_ports(forwards, nftables.table_text() if forwards else "")
        nameservers: tuple[str, ...] = ()
        search: tuple[str, ...] = ()
        description = None
        if self.configs:
            result = pod_network.setup(pod_path, self.pod_uuid, self.configs, self.requests, forwards, say)
            self.networks, nameservers, search = result.networks, result.nameservers, result.search
            description = guest_description(self.networks, self.pod_uuid)
            say("networks: " + ", ".join(f"{c.name} {n.guest_ip}/{n.prefix} on eth{i} (host {n.tap})"
                                         for i, (c, n) in enumerate(zip(self.configs, self.networks))))
        guest_files, app_files = {}, {}
        resolv = resolv_conf(self.dns, self.dns_search, nameservers, search)
        if resolv is not None:
            guest_files["resolv.conf"] = app_files["resolv.conf"] = resolv
        if self.hostname:
            guest_files["hostname"] = (self.hostname + "\n").encode()
            guest_files["hosts"] = app_files["hosts"] = hosts_file(self.hostname)
        return GuestNetFiles(description, guest_files, app_files)
