"""pod/isolators.py: appc isolators read into the settings systemd takes (rkt 1.30's rules)."""

import pytest

from kvmpod.pod.isolators import DEFAULT_CAPABILITIES, MODERN_LIBC_CALLS, default_isolators, read_isolators
from kvmpod.pod.model import Isolator
from kvmpod.pod.seccomp_sets import DOCKER_DEFAULT_BLACKLIST, DOCKER_DEFAULT_WHITELIST

FIELD = "apps[0].app.isolators"


def read(*isolators: tuple[str, object], uid: int = 0):
    return read_isolators(tuple(Isolator(n, v) for n, v in isolators), FIELD, uid)


def test_defaults_are_appc_capabilities_and_dockers_blacklist_returning_eperm():
    iso = default_isolators(0)
    assert iso.capabilities == DEFAULT_CAPABILITIES and len(DEFAULT_CAPABILITIES) == 14
    assert (iso.seccomp_mode, iso.seccomp_set, iso.seccomp_errno) == ("deny", DOCKER_DEFAULT_BLACKLIST, "EPERM")
    assert {"reboot", "mount", "kexec_load", "ptrace"} <= set(iso.seccomp_set)
    assert iso.no_new_privileges is False
    assert (iso.memory_max, iso.cpu_quota_percent, iso.cpu_weight, iso.oom_score_adjust) == (None,) * 4


def test_non_root_app_with_a_filter_gets_no_new_privileges_as_in_rkt():
    assert default_isolators(1000).no_new_privileges is True
    off = read(("os/linux/seccomp-retain-set", {"set": ["@appc.io/all"]}), uid=1000)[0]
    assert (off.seccomp_mode, off.no_new_privileges) == ("off", False)


@pytest.mark.parametrize("name,value,key,expected", [
    ("resource/memory", {"limit": "128Mi"}, "memory_max", 128 * 2**20),
    ("resource/memory", {"limit": "1G", "request": "1"}, "memory_max", 10**9),
    ("resource/memory", {"request": "1G"}, "memory_max", None),
    ("resource/cpu", {"limit": "250m"}, "cpu_quota_percent", 25),
    ("resource/cpu", {"limit": "2"}, "cpu_quota_percent", 200),
    ("resource/cpu", {"limit": "1m"}, "cpu_quota_percent", 1),
    ("os/linux/cpu-shares", 1024, "cpu_weight", 100),
    ("os/linux/cpu-shares", 2, "cpu_weight", 1),
    ("os/linux/cpu-shares", 262144, "cpu_weight", 10000),
    ("os/linux/oom-score-adj", -1000, "oom_score_adjust", -1000),
    ("os/linux/no-new-privileges", True, "no_new_privileges", True),
])
def test_resource_and_process_isolators(name, value, key, expected):
    iso, problems, warnings = read((name, value))
    assert (problems, warnings) == ([], [])
    assert getattr(iso, key) == expected


def test_capabilities_retain_replaces_remove_subtracts_from_the_default():
    retain = read(("os/linux/capabilities-retain-set", {"set": ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]}))[0]
    assert retain.capabilities == ("CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE")
    remove = read(("os/linux/capabilities-remove-set", {"set": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}))[0]
    assert remove.capabilities == tuple(c for c in DEFAULT_CAPABILITIES if c != "CAP_CHOWN")


def test_seccomp_wildcards_expand_as_rkt_did():
    iso = read(("os/linux/seccomp-remove-set", {"set": ["@rkt/default-blacklist", "chmod", "@systemd/clock"],
                                                "errno": "ENOTSUP"}))[0]
    assert iso.seccomp_set == DOCKER_DEFAULT_BLACKLIST + ("chmod", "@clock")
    assert (iso.seccomp_mode, iso.seccomp_errno) == ("deny", "ENOTSUP")
    empty = read(("os/linux/seccomp-remove-set", {"set": ["@appc.io/empty"]}))[0]
    assert empty.seccomp_mode == "allow" and empty.seccomp_set == DOCKER_DEFAULT_WHITELIST + MODERN_LIBC_CALLS
    retain = read(("os/linux/seccomp-retain-set", {"set": ["@docker/default-whitelist", "clone3"]}))[0]
    assert retain.seccomp_mode == "allow" and retain.seccomp_errno == ""
    assert retain.seccomp_set.count("clone3") == 1 and "read" in retain.seccomp_set


@pytest.mark.parametrize("isolators,field,words", [
    ([("resource/memory", {"limit": "lots"})], "[0].value.limit", "not a quantity"),
    ([("resource/memory", {"limit": "0"})], "[0].value.limit", "positive limit"),
    ([("resource/memory", {"limit": "500m"})], "[0].value.limit", "less than a byte"),
    ([("resource/cpu", "1")], "[0].value", "must be an object"),
    # appc's schema: an empty request or limit is no quantity; default must be false
    ([("resource/cpu", {"request": "", "limit": "1"})], "[0].value.request", "'' is not a quantity"),
    ([("resource/cpu", {"limit": ""})], "[0].value.limit", "'' is not a quantity"),
    ([("resource/memory", {"request": ""})], "[0].value.request", "or remove request"),
    ([("resource/memory", {"request": "1G", "limit": ""})], "[0].value.limit", "or remove limit"),
    ([("resource/memory", {"request": "lots"})], "[0].value.request", "not a quantity"),
    ([("resource/memory", {"limit": "1G", "default": True})], "[0].value.default", "must be false"),
    ([("os/linux/cpu-shares", 1)], "[0].value", "from 2 to 262144"),
    ([("os/linux/cpu-shares", True)], "[0].value", "from 2 to 262144"),
    ([("os/linux/oom-score-adj", "5")], "[0].value", "from -1000 to 1000"),
    ([("os/linux/no-new-privileges", 1)], "[0].value", "true or false"),
    ([("os/linux/capabilities-retain-set", {"set": []})], "[0].value.set", "non-empty"),
    ([("os/linux/capabilities-retain-set", {"set": ["NET_ADMIN"]})], "[0].value.set[0]", "not a Linux capability"),
    ([("os/linux/capabilities-retain-set", {"set": ["CAP_CHOWN"]}),
      ("os/linux/capabilities-remove-set", {"set": ["CAP_KILL"]})], "[1]", "cannot both"),
    ([("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "eperm"})], "[0].value.errno", "errno name"),
    ([("os/linux/seccomp-remove-set", {"set": ["@docker/everything"]})], "[0].value.set[0]", "unknown wildcard"),
    ([("os/linux/seccomp-remove-set", {"set": ["Reboot!"]})], "[0].value.set[0]", "not a system call"),
    ([("os/linux/seccomp-remove-set", {"set": ["reboot"]}),
      ("os/linux/seccomp-retain-set", {"set": ["read"]})], "[1]", "one per app"),
])
def test_bad_values_name_their_field(isolators, field, words):
    problems = read(*isolators)[1]
    assert len(problems) == 1, problems
    assert problems[0].field == FIELD + field and words in problems[0].message


def test_unknown_isolator_is_a_warning_not_a_problem():
    iso, problems, warnings = read(("example.com/x", 1), ("os/linux/selinux-context", {"user": "u"}))
    assert problems == [] and iso == default_isolators(0)
    assert warnings == [f"{FIELD}[0]: unknown isolator 'example.com/x'; ignored",
                        f"{FIELD}[1]: isolator 'os/linux/selinux-context' is not applied in a kvmpod guest; ignored"]
