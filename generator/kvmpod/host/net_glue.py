"""kvmpod run's networks, between the rooms: host.net makes them, host.pods writes what the guest
reads (networks.json, resolv.conf, hosts, hostname) into the pod's root. Called by pod_commands
(run: PodNet.up before the boot, teardown after; gc: teardown before a pod directory goes)."""

import argparse
from collections.abc import Callable

from ..pod.image_manifests import load_image_apps
from ..pod.model import Pod
from ..pod.mounts import STAGE2_DIR
from ..pod.problems import InvalidInput, Problem
from .net import nftables, pod_network
from .net.guest_names import check_hostname, hosts_file, resolv_conf
from .net.net_configs import load_configs, parse_net_flag
from .net.nics import Network, guest_description
from .net.port_forwards import app_ports, reserve_ports, resolve_forwards, wanted_forwards
from .net.run_flags import given, net_values
from .pods.pod_dirs import PodDir
from .pods.stage import stage_etc_files, stage_pod


class PodNet:
    """One pod's networking: checked from the options before anything is written, set up by `up`."""

    def __init__(self, opts: argparse.Namespace, pod: Pod, manifest_bytes: bytes, pod_uuid: str,
                 external: bool) -> None:
        self.pod, self.manifest_bytes, self.pod_uuid = pod, manifest_bytes, pod_uuid
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
    def from_options(cls, opts: argparse.Namespace, pod: Pod, manifest_bytes: bytes, pod_uuid: str, *,
                     external: bool) -> "PodNet | None":
        if external:
            flags = [f for f in given(opts) if f in ("--net", "--port")]
            if flags:
                raise InvalidInput([Problem(flags[0], "cannot be given with --networks/--cni-result (networks "
                                                      "made by the caller); give one or the other")])
            if not opts.dns and not opts.dns_search and not opts.hostname:
                return None
        return cls(opts, pod, manifest_bytes, pod_uuid, external)

    def up(self, pod_dir: PodDir, say: Callable[[str], None]) -> None:
        image_apps = load_image_apps(self.pod, pod_dir.rootfs, required=False)
        forwards = resolve_forwards(wanted_forwards(self.port_flags, self.pod), app_ports(self.pod, image_apps),
                                    forwardable=bool(self.configs))
        self.sockets = reserve_ports(forwards, nftables.table_text() if forwards else "")
        nameservers: tuple[str, ...] = ()
        search: tuple[str, ...] = ()
        if self.configs:
            result = pod_network.setup(pod_dir.path, self.pod_uuid, self.configs, self.requests, forwards, say)
            self.networks, nameservers, search = result.networks, result.nameservers, result.search
            stage_pod(pod_dir.rootfs, self.manifest_bytes, guest_description(self.networks, self.pod_uuid))
            say("networks: " + ", ".join(f"{c.name} {n.guest_ip}/{n.prefix} on eth{i} (host {n.tap})"
                                         for i, (c, n) in enumerate(zip(self.configs, self.networks))))
        guest_files, app_files = {}, {}
        resolv = resolv_conf(self.dns, self.dns_search, nameservers, search)
        if resolv is not None:
            guest_files["resolv.conf"] = app_files["resolv.conf"] = resolv
        if self.hostname:
            guest_files["hostname"] = (self.hostname + "\n").encode()
            guest_files["hosts"] = app_files["hosts"] = hosts_file(self.hostname)
        if guest_files:
            stage_etc_files(pod_dir.rootfs, [a.name for a in self.pod.apps], guest_files, app_files, STAGE2_DIR)


def teardown(pod_dir: PodDir) -> list[str]:
    """Undo the pod's networks as its net.json records them (nothing when it has none); the problems left."""
    return pod_network.teardown(pod_dir.path)


def addresses(pod_dir: PodDir) -> list[dict]:
    """The pod's addresses as recorded ([{network, address, interface, tap}]) for kvmpod list and status."""
    return pod_network.recorded_addresses(pod_dir.path)
