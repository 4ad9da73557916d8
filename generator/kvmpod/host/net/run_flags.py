"""kvmpod run's network flags (rkt's): --net, --port, --dns, --dns-search, --hostname."""

import argparse
import os

NET_ENV = "KVMPOD_NET"  # the --net used when none is given (default: "default", rkt's)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", action="append", metavar="NETS",
                        help="the pod's networks: default (the default: a NAT'ed point-to-point link), none "
                             "(loopback only), or NAME[:KEY=VAL;...],... from /etc/kvmpod/net.d (KVMPOD_NET_DIR); "
                             f"${NET_ENV} sets the default")
    parser.add_argument("--port", action="append", metavar="NAME:HOSTPORT",
                        help="forward HOSTPORT on this host to the app port named NAME (repeatable)")
    parser.add_argument("--dns", action="append", metavar="host|none|ADDRESS",
                        help="the apps' nameservers: host (this host's resolv.conf), none (the images' own) or "
                             "addresses (repeatable or comma-separated)")
    parser.add_argument("--dns-search", action="append", metavar="DOMAIN", help="a search domain (repeatable)")
    parser.add_argument("--hostname", help="the pod's host name (/etc/hostname, and /etc/hosts for the apps)")


def net_values(opts: argparse.Namespace) -> list[str] | None:
    """--net as given, else $KVMPOD_NET, else None (the default network)."""
    if getattr(opts, "net", None):
        return opts.net
    default = os.environ.get(NET_ENV)
    return [default] if default else None


def given(opts: argparse.Namespace) -> list[str]:
    """The network flags given on the command line (to refuse them where they do not apply)."""
    return [f"--{name.replace('_', '-')}" for name in ("net", "port", "dns", "dns_search", "hostname")
            if getattr(opts, name, None)]
