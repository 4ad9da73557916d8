"""User= and Group= for an app, as numbers: appc's user/group are a number, a name in the app's
own /etc/passwd or /etc/group, or a path in the app whose owner is meant. systemd would look names
up in the guest, not the app, so the generator resolves them here (edge: reads the app's files).
"""

import os

from .app_services import Identity
from ..pod.files import read_text
from ..pod.ids import is_valid_id, parse_id
from ..pod.problems import InvalidInput, Problem
from ..pod.user_database import entries


def _database_ids(path: str, field: str) -> dict[str, int]:
    """{name: id} of a passwd or group file (read safely: a FIFO or /dev/zero there is refused; its
    entries as pod/user_database.py reads them). A line whose id systemd would not accept is skipped,
    as if absent; the first entry of a name wins, as getent's."""
    ids: dict[str, int] = {}
    for fields in entries(read_text(path, field), 3):
        if (number := parse_id(fields[2])) is not None:
            ids.setdefault(fields[0], number)
    return ids


def lookup_id(rootfs_on_disk: str, value: str, database: str) -> int | None:
    """The number for `value` from the app's /etc/passwd or /etc/group, a path's owner, or None.

    Raises InvalidInput when that file is there but not a readable regular file."""
    if value.isascii() and value.isdigit():
        return parse_id(value)
    if value.startswith("/"):
        try:
            st = os.stat(rootfs_on_disk + value)
        except (OSError, ValueError):
            return None
        number = st.st_uid if database == "passwd" else st.st_gid
        return number if is_valid_id(number) else None
    found = _database_ids(f"{rootfs_on_disk}/etc/{database}", f"the app's /etc/{database}").get(value)
    # rkt and appc: "root" is 0 even in an image with no /etc/passwd or /etc/group.
    return 0 if found is None and value == "root" else found


def known_ids(root_on_disk: str, database: str) -> set[int]:
    """Every id systemd can run a unit as: the guest's own /etc/passwd or /etc/group, plus root
    and nobody, which systemd knows without a database."""
    return {0, 65534} | set(_database_ids(f"{root_on_disk}/etc/{database}", f"/etc/{database}").values())


def resolve_identity(rootfs_on_disk: str, user: str, group: str, field: str) -> Identity | list[Problem]:
    try:
        uid = lookup_id(rootfs_on_disk, user, "passwd")
        gid = lookup_id(rootfs_on_disk, group, "group")
    except InvalidInput as error:
        return [Problem(f"{field}.user" if "passwd" in p.field else f"{field}.group", str(p))
                for p in error.problems]
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
