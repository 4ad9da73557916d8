"""What the pod's apps read to resolve names: /etc/resolv.conf from `--dns` (rkt's flag) and
/etc/hosts and /etc/hostname from `--hostname`, as file contents (pods.stage writes them into the
guest's root and every app's rootfs, where the apps read them: they run chrooted in their images).

`--dns` (repeatable, or comma-separated): `host` copies this host's /etc/resolv.conf (rkt's `host`),
`none` leaves every image's own file alone, anything else is a nameserver address; `--dns-search`
adds search domains. Without `--dns`: the nameservers the IPAM plugin returned (CNI's `dns`), if any,
else the images' own files are left as they are (rkt did the same).
"""

import ipaddress
import re

from ...pod.problems import InvalidInput, Problem

HOST_RESOLV_CONF = "/etc/resolv.conf"
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def resolv_conf(dns: list[str] | None, search: list[str] | None, ipam_nameservers: tuple[str, ...] = (),
                ipam_search: tuple[str, ...] = (), host_file: str = HOST_RESOLV_CONF) -> bytes | None:
    """The resolv.conf the apps get, or None to leave theirs alone; InvalidInput for a bad --dns."""
    values = [v.strip() for value in dns or [] for v in value.split(",") if v.strip()]
    problems = []
    domains = [d.strip() for value in search or [] for d in value.split(",") if d.strip()]
    for domain in domains:
        if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.rstrip(".").split(".")):
            problems.append(Problem("--dns-search", f"{domain!r} is not a domain name"))
    if "host" in values or "none" in values:
        if len(values) > 1:
            problems.append(Problem("--dns", f"{'host' if 'host' in values else 'none'} stands alone; give it "
                                             f"without addresses"))
    else:
        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                problems.append(Problem("--dns", f"{value!r} is not a nameserver address (or \"host\", \"none\")"))
    if problems:
        raise InvalidInput(problems)
    if values == ["none"]:
        return None
    if values == ["host"]:
        try:
            with open(host_file, "rb") as f:
                text = f.read(1 << 16)
        except OSError as error:
            raise InvalidInput([Problem("--dns", f"host: cannot read {host_file}: {error.strerror}")]) from None
        if domains:
            text += ("search " + " ".join(domains) + "\n").encode()
        return text
    servers = values or list(ipam_nameservers)
    domains = domains or list(ipam_search)
    if not servers and not domains:
        return None
    lines = ["# written by kvmpod run (--dns)"] + [f"nameserver {s}" for s in servers]
    if domains:
        lines.append("search " + " ".join(domains))
    return ("\n".join(lines) + "\n").encode()


def check_hostname(hostname: str | None) -> str | None:
    if hostname is None:
        return None
    if len(hostname) > 64 or not all(_LABEL.match(label) for label in hostname.split(".")):
        raise InvalidInput([Problem("--hostname", f"{hostname!r} is not a host name (labels of letters, digits "
                                                  f"and \"-\", separated by \".\", at most 64 characters)")])
    return hostname


def hosts_file(hostname: str) -> bytes:
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{names}\n").encode()
