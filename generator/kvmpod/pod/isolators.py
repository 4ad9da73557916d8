"""An app's isolators read into AppIsolators (appc ace.md "Isolators"; rkt 1.30's prepareApp,
computeAppResources, getAppCapabilities and generateSeccompFilter).

A known isolator with a bad value is a problem naming its field; an unknown name is a warning and
is ignored (appc lets implementations and users add their own). Pure: no files, no logging.
"""

import errno

from .model import AppIsolators, Isolator
from .problems import Problem

# appc's default bounding set (ace.md, os/linux/capabilities-remove-set), which rkt applied.
DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_KILL", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
)
# Every capability Linux 6.1 (the guest's kernel) knows (linux/capability.h).
KNOWN_CAPABILITIES = frozenset(DEFAULT_CAPABILITIES) | {
    "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE",
    "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}
# Calls today's glibc makes that Docker's 2016 whitelist predates: a whitelist expanded from it
# gets them too, or every app linked against a current libc would die in its first thread.
MODERN_LIBC_CALLS = ("clone3", "rseq", "statx", "faccessat2", "openat2", "close_range", "copy_file_range",
                     "membarrier", "pidfd_open", "pidfd_send_signal", "epoll_pwait2")
# rkt's @systemd/* wildcards: systemd's own syscall groups.
SYSTEMD_GROUPS = {"clock": "@clock", "default-whitelist": "@default", "mount": "@mount",
                  "network-io": "@network-io", "obsolete": "@obsolete", "privileged": "@privileged",
                  "process": "@process", "raw-io": "@raw-io"}
# Known to appc, not applied in a kvmpod guest (rkt applied none of them either).
NOT_APPLIED = ("resource/block-bandwidth", "resource/block-iops", "resource/network-bandwidth",
               "os/linux/selinux-context", "os/linux/apparmor-profile")
# The error a call blocked by kvmpod's default filter returns: Docker's default action (EPERM).
DEFAULT_SECCOMP_ERRNO = "EPERM"
_SYSCALL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_QUANTITY_HINT = 'write it like "512Mi", "1G" or "500m"'


def default_isolators(uid: int) -> AppIsolators:
    """What an app without isolators gets: appc's capabilities and kvmpod's default seccomp filter."""
    return read_isolators((), "", uid)[0]


def read_isolators(isolators: tuple[Isolator, ...], field: str, uid: int) -> tuple[AppIsolators, list[Problem],
                                                                                     list[str]]:
    """(the isolators, problems, warnings) for an app running as `uid`; `field` names its
    isolators array, e.g. "apps[0].app.isolators"."""
    problems: list[Problem] = []
    warnings: list[str] = []
    values: dict = {}
    retain = remove = None
    seccomp = None  # (field, isolator)
    for k, isolator in enumerate(isolators):
        here = f"{field}[{k}]"
        name, value = isolator.name, isolator.value
        if name == "resource/memory":
            limit = _limit(value, here, problems)
            if limit is not None and limit.floor() == 0:
                problems.append(Problem(f"{here}.value.limit", f"{value['limit']!r} is less than a byte; give a "
                                                               "limit like \"64Mi\""))
            elif limit is not None:
                values["memory_max"] = limit.floor()
        elif name == "resource/cpu":
            limit = _limit(value, here, problems)
            if limit is not None:
                # rkt: the limit in millicores / 10 is the percentage of one CPU.
                values["cpu_quota_percent"] = max(1, limit.scaled(1000).floor() // 10)
        elif name == "os/linux/cpu-shares":
            shares = _integer(value, f"{here}.value", 2, 262144, problems)
            if shares is not None:
                # systemd's own conversion of CPUShares= to the cgroup v2 weight (1..10000).
                values["cpu_weight"] = min(max(shares * 100 // 1024, 1), 10000)
        elif name == "os/linux/oom-score-adj":
            values["oom_score_adjust"] = _integer(value, f"{here}.value", -1000, 1000, problems)
        elif name == "os/linux/no-new-privileges":
            if isinstance(value, bool):
                values["no_new_privileges"] = value
            else:
                problems.append(Problem(f"{here}.value", f"must be true or false, not {value!r}"))
        elif name in ("os/linux/capabilities-retain-set", "os/linux/capabilities-remove-set"):
            caps = _capabilities(value, here, problems)
            if caps is not None:
                if name.endswith("retain-set"):
                    retain = (retain or ()) + caps
                else:
                    remove = (remove or ()) + caps
                if retain is not None and remove is not None:
                    problems.append(Problem(here, "capabilities-retain-set and capabilities-remove-set cannot both "
                                                  "be given (appc); keep one of them"))
        elif name in ("os/linux/seccomp-retain-set", "os/linux/seccomp-remove-set"):
            if seccomp is not None:
                problems.append(Problem(here, f"a second seccomp isolator (the first is {seccomp[0]}); appc allows "
                                              "one per app: merge them"))
            else:
                seccomp = (here, isolator)
        elif name in NOT_APPLIED:
            warnings.append(f"{here}: isolator {name!r} is not applied in a kvmpod guest; ignored")
        else:
            warnings.append(f"{here}: unknown isolator {name!r}; ignored")
    if retain is not None:
        values["capabilities"] = tuple(dict.fromkeys(retain))
    else:
        values["capabilities"] = tuple(c for c in DEFAULT_CAPABILITIES if c not in (remove or ()))
    if seccomp is None:
        values.update(seccomp_mode="deny", seccomp_errno=DEFAULT_SECCOMP_ERRNO, seccomp_set=_rkt_blacklist())
    else:
        values.update(_seccomp(*seccomp, problems))
    # rkt: an app that is not root and has a seccomp filter always gets no_new_privs.
    if uid != 0 and values["seccomp_mode"] != "off":
        values["no_new_privileges"] = True
    values = {key: value for key, value in values.items() if value is not None}
    return AppIsolators(**values), problems, warnings


def resource_limit(value: object, field: str, problems: list[Problem]):
    """The `limit` of a resource/cpu or resource/memory isolator's value (None: no limit), checked as
    appc's schema checks it: `request` and `limit`, when given, are quantities (an empty string is
    none: appc's parser refuses it), and `default` is false (ErrDefaultTrue)."""
    from .quantity import parse_quantity

    if not isinstance(value, dict):
        problems.append(Problem(f"{field}.value", f'must be an object like {{"limit": "512Mi"}}, not {value!r}'))
        return None
    if value.get("default", False) is not False:
        problems.append(Problem(f"{field}.value.default", f"must be false for this resource (appc), not "
                                                          f"{value['default']!r}; remove it"))
    for key in ("request", "limit"):
        if key in value:
            try:
                parse_quantity(value[key])
            except ValueError:
                problems.append(Problem(f"{field}.value.{key}", f"{value[key]!r} is not a quantity; {_QUANTITY_HINT}"
                                        + (f", or remove {key}" if value[key] in ("", None) else "")))
    if "limit" not in value:
        return None  # a request alone: rkt set no limit
    try:
        limit = parse_quantity(value["limit"])
    except ValueError:
        return None
    if limit.numerator <= 0:
        problems.append(Problem(f"{field}.value.limit", f"{value['limit']!r} leaves the app nothing; give a "
                                                        f"positive limit or remove the isolator"))
        return None
    return limit


_limit = resource_limit


def _integer(value: object, field: str, low: int, high: int, problems: list[Problem]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(Problem(field, f"must be an integer from {low} to {high}, not {value!r}"))
        return None
    return value


def _set(value: object, field: str, problems: list[Problem]) -> list[str] | None:
    if not isinstance(value, dict) or not isinstance(value.get("set"), list) or not value["set"]:
        problems.append(Problem(f"{field}.value.set", "must be a non-empty array of names, e.g. "
                                                      '{"set": ["CAP_NET_BIND_SERVICE"]}'))
        return None
    bad = [i for i, item in enumerate(value["set"]) if not isinstance(item, str) or not item]
    for i in bad:
        problems.append(Problem(f"{field}.value.set[{i}]", f"must be a non-empty string, not {value['set'][i]!r}"))
    return None if bad else value["set"]


def _capabilities(value: object, field: str, problems: list[Problem]) -> tuple[str, ...] | None:
    names = _set(value, field, problems)
    if names is None:
        return None
    unknown = [(i, n) for i, n in enumerate(names) if n not in KNOWN_CAPABILITIES]
    for i, name in unknown:
        problems.append(Problem(f"{field}.value.set[{i}]", f"{name!r} is not a Linux capability; write it like "
                                                           '"CAP_NET_BIND_SERVICE"'))
    return None if unknown else tuple(names)


def _rkt_blacklist() -> tuple[str, ...]:
    from .seccomp_sets import DOCKER_DEFAULT_BLACKLIST

    return DOCKER_DEFAULT_BLACKLIST


def _rkt_whitelist() -> tuple[str, ...]:
    from .seccomp_sets import DOCKER_DEFAULT_WHITELIST

    return DOCKER_DEFAULT_WHITELIST + MODERN_LIBC_CALLS


def _seccomp(field: str, isolator: Isolator, problems: list[Problem]) -> dict:
    """systemd's SystemCallFilter= for one seccomp isolator, as rkt's parseLinuxSeccompSet read it."""
    retain = isolator.name.endswith("retain-set")
    result: dict = {"seccomp_mode": "allow" if retain else "deny", "seccomp_set": ()}
    names = _set(isolator.value, field, problems)
    if names is None:
        return result
    assert isinstance(isolator.value, dict)
    errno_name = isolator.value.get("errno") or ""
    if not isinstance(errno_name, str) or (errno_name and (not errno_name.isupper() or
                                                           errno_name not in errno.errorcode.values())):
        problems.append(Problem(f"{field}.value.errno", f"{errno_name!r} is not an errno name; write it like "
                                                        '"EPERM" or "ENOTSUP", or "" to kill the app with SIGSYS'))
    else:
        result["seccomp_errno"] = errno_name
    expanded: list[str] = []
    for i, item in enumerate(names):
        if not item.startswith("@"):
            if item[0].isdigit() or not _SYSCALL_CHARS.issuperset(item):
                problems.append(Problem(f"{field}.value.set[{i}]", f"{item!r} is not a system call name"))
            expanded.append(item)
            continue
        scope, _, wildcard = item.partition("/")
        if item == "@appc.io/all" and retain:
            return {"seccomp_mode": "off", "seccomp_set": (), "seccomp_errno": ""}
        if item == "@appc.io/empty" and not retain:
            # rkt: removing the empty set opts in to the implementation's default whitelist.
            result["seccomp_mode"] = "allow"
            return dict(result, seccomp_set=_rkt_whitelist())
        if scope in ("@docker", "@rkt") and wildcard == "default-blacklist":
            expanded += _rkt_blacklist()
        elif scope in ("@docker", "@rkt") and wildcard == "default-whitelist":
            expanded += _rkt_whitelist()
        elif scope == "@systemd" and wildcard in SYSTEMD_GROUPS:
            expanded.append(SYSTEMD_GROUPS[wildcard])
        else:
            problems.append(Problem(f"{field}.value.set[{i}]", f"unknown wildcard {item!r}; kvmpod knows "
                                    "@appc.io/all (retain), @appc.io/empty (remove), @docker/default-blacklist, "
                                    "@docker/default-whitelist, @rkt/default-blacklist, @rkt/default-whitelist and "
                                    "@systemd/" + ", @systemd/".join(SYSTEMD_GROUPS)))
    result["seccomp_set"] = tuple(dict.fromkeys(expanded))
    return result
