"""AC Names and the 9p mount tag that host and guest must agree on."""

_AC_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

# QEMU refuses 9p mount tags over 31 bytes (lkvm over 32); take the smaller.
MAX_9P_TAG_BYTES = 31
_HASHED_TAG_PREFIX = "kvmpod_"  # "_" is not allowed in an AC Name: no real name can look like this


def is_ac_name(name: str) -> bool:
    """appc's ACName, ^[a-z0-9]+(-[a-z0-9]+)*$, without importing re at boot."""
    return all(part and _AC_NAME_CHARS.issuperset(part) for part in name.split("-"))


def ninep_tag(volume_name: str) -> str:
    """The 9p mount tag for a volume: its name when it fits, else a stable short form."""
    if len(volume_name.encode()) <= MAX_9P_TAG_BYTES:
        return volume_name
    import hashlib  # only long names pay for it; the generator's usual path stays lean

    digest = hashlib.sha256(volume_name.encode()).hexdigest()
    return _HASHED_TAG_PREFIX + digest[: MAX_9P_TAG_BYTES - len(_HASHED_TAG_PREFIX)]
