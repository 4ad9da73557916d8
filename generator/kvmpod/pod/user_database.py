"""The user database's files, /etc/passwd and /etc/group, as text: their entries, an id field's number,
a group's gid by name. Text only: each caller reads the file its own way (an image's through
host/images/safe_paths.py, the stage1's own directly) and gives None for a file that is not there.

The host looks names up here for an image's User (host/images/image_config.py) and for the stage1's
systemd-journal group (host/pods/kept_journal.py).
"""

# (uid_t)-1 means "no id"; anything from it up is not a number an entry can give.
NO_ID = 4294967295


def entries(text: str | None, fields: int) -> list[list[str]]:
    """The entries of a passwd or group file's text (None: no file, no entries): each line split at
    ':', those with fewer than `fields` fields left out, and blank lines and comments (#) too."""
    return [e for e in (line.split(":") for line in (text or "").splitlines() if line and not line.startswith("#"))
            if len(e) >= fields]


def id_number(text: str) -> int | None:
    """The id an entry's field spells in ASCII digits, below (uid_t)-1; None for anything else.

    str.isdigit() alone is not enough: it is true for "²", which int() cannot read, and int() refuses
    thousands of digits; leading zeros are read as getent reads them ("007" is 7)."""
    if not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 and int(digits) < NO_ID else None


def group_id(text: str | None, name: str) -> int | None:
    """The gid of group `name` in a group file's text: the first entry of that name whose gid is a
    number; None when there is none (or no file)."""
    return next((gid for e in entries(text, 3) if e[0] == name and (gid := id_number(e[2])) is not None), None)
