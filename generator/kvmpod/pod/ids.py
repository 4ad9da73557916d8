"""User and group ids as systemd accepts them (src/basic/user-util.c: parse_uid, uid_is_valid)."""

# uid_t is 32 bits; (uid_t)-1 means "no id" and systemd also refuses 65535, the 16-bit -1.
MAX_ID = 4294967294
_INVALID_IDS = (65535,)
ID_HINT = "a uid/gid is 0..4294967294 (not 65535), written in ASCII digits"


def parse_id(text: str) -> int | None:
    """The id `text` spells in ASCII digits, if systemd would accept it; else None.

    str.isdigit() is not enough: it is true for "²" and other digits int() cannot read, and a
    5,000-digit number would raise ValueError (Python's int digit limit)."""
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID and value not in _INVALID_IDS else None


def is_valid_id(value: int) -> bool:
    return 0 <= value <= MAX_ID and value not in _INVALID_IDS
