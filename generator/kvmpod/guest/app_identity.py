"""User= and Group= for an app, as numbers: appc's user/group are a number, a name in the app's
own /etc/passwd or /etc/group, or a path in the app whose owner is meant. systemd would look names
up in the guest, not the app, so the generator resolves them here (edge: reads the app's files).
"""

import os

from .app_services import Identity
from ..pod.problems import Problem


def lookup_id(rootfs_on_disk: str, value: str, database: str) -> int | None:
    """The number for `value` from the app's /etc/passwd or /etc/group, a path's owner, or None."""
    if value.isdigit():
        return int(value)
    if value.startswith("/"):
        try:
            st = os.stat(rootfs_on_disk + value)
        except OSError:
            return None
        return st.st_uid if database == "passwd" else st.st_gid
    try:
        with open(f"{rootfs_on_disk}/etc/{database}", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == value and fields[2].isdigit():
                    return int(fields[2])
    except OSError:
        pass
    # rkt and appc: "root" is 0 even in an image with no /etc/passwd or /etc/group.
    return 0 if value == "root" else None


def known_ids(root_on_disk: str, database: str) -> set[int]:
    """Every id systemd can run a unit as: the guest's own /etc/passwd or /etc/group, plus root
    and nobody, which systemd knows without a database."""
    ids = {0, 65534}
    try:
        with open(f"{root_on_disk}/etc/{database}", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit():
                    ids.add(int(fields[2]))
    except OSError:
        pass
    return ids


def resolve_identity(rootfs_on_disk: str, user: str, group: str, field: str) -> Identity | list[Problem]:
    uid = lookup_id(rootfs_on_disk, user, "passwd")
    gid = lookup_id(rootfs_on_disk, group, "group")
    problems = []
    if uid is None:
        problems.append(Problem(f"{field}.user", f"{user!r} is neither a number nor a user in the app's "
                                                 "/etc/passwd nor an existing path; give a uid"))
    if gid is None:
        problems.append(Problem(f"{field}.group", f"{group!r} is neither a number nor a group in the app's "
                                                  "/etc/group nor an existing path; give a gid"))
    if uid is None or gid is None:
        return problems
    return Identity(uid, gid)
