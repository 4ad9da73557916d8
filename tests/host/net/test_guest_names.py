"""--dns and --hostname: the resolv.conf, hosts and hostname the pod's apps get."""

from pathlib import Path

import pytest

from kvmpod.host.net.guest_names import check_hostname, hosts_file, resolv_conf
from kvmpod.pod.problems import InvalidInput


def test_dns_addresses_search_and_the_ipam_default(tmp_path: Path):
    assert resolv_conf(["10.0.0.53,10.0.0.54"], ["example.test"]) == \
        b"# written by kvmpod run (--dns)\nnameserver 10.0.0.53\nnameserver 10.0.0.54\nsearch example.test\n"
    assert resolv_conf(None, None) is None  # the images' own
    assert resolv_conf(["none"], None) is None
    assert b"nameserver 10.1.0.53" in resolv_conf(None, None, ("10.1.0.53",), ("lan",))
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    assert resolv_conf(["host"], None, host_file=str(host)) == b"nameserver 192.0.2.1\n"


@pytest.mark.parametrize("dns, search, field", [
    (["banana"], None, "--dns"), (["host", "10.0.0.1"], None, "--dns"), (None, ["bad domain"], "--dns-search"),
    (["1.2.3.4\nnameserver 6.6.6.6"], None, "--dns"),
])
def test_bad_dns(dns, search, field):
    with pytest.raises(InvalidInput) as error:
        resolv_conf(dns, search)
    assert [p.field for p in error.value.problems] == [field]


def test_hostname_and_hosts():
    assert check_hostname("pod-a.example.test") == "pod-a.example.test"
    assert hosts_file("pod-a.example.test").endswith(b"127.0.1.1\tpod-a.example.test pod-a\n")
    assert b"127.0.0.1\tlocalhost\n" in hosts_file("web")
    for bad in ("-x", "a b", "x" * 65, "a..b", "a\nb"):
        with pytest.raises(InvalidInput):
            check_hostname(bad)
