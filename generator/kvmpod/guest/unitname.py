"""Name units exactly like systemd does (src/basic/unit-name.c, v251+).

Runs on the boot critical path inside a generator, so: stdlib only, no
module-level imports beyond the tiny siphash helper (only used for names
>= 256 bytes, which is rare).
"""

from .siphash import siphash24

UNIT_NAME_MAX = 256  # systemd: a unit name must be strictly shorter than this
_NAME_MAX = 255      # per-component limit enforced by path_is_valid()
_PATH_MAX = 4096     # whole-path limit enforced by path_is_valid()
_HASH_CHARS = 16     # UNIT_NAME_HASH_LENGTH_CHARS
# LONG_UNIT_NAME_HASH_KEY = SD_ID128_MAKE(ec,f2,37,fb,58,32,4a,32,84,9f,06,9b,0d,21,eb,9a)
_LONG_NAME_KEY = bytes.fromhex("ecf237fb58324a32849f069b0d21eb9a")

_UNIT_TYPES = frozenset((
    "service", "mount", "swap", "socket", "target", "device",
    "automount", "timer", "path", "slice", "scope",
))

# One output string per input byte. systemd keeps [A-Za-z0-9:_.] and turns
# "/" into "-"; everything else (including "-" and "\", which are legal in
# unit names but would make unescaping ambiguous) becomes \xNN.
_SAFE = b"0123456789:_.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TABLE = tuple(
    "-" if c == 0x2F else chr(c) if c in _SAFE else "\\x%02x" % c
    for c in range(256)
)
_TRANSLATION = dict(enumerate(_TABLE))  # for str.translate on the bytes as latin-1: byte b is chr(b)


def escape_path(path: str) -> str:
    """Return what `systemd-escape --path` prints for a normalized absolute path.

    Stricter than systemd (which silently simplifies "//" and trailing "/"):
    the caller is supposed to pass normalized paths, so anything else is a
    bug upstream and raises ValueError rather than being papered over.
    """
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    if path == "/":
        return "-"
    if "\0" in path or "\n" in path:
        raise ValueError(f"path contains NUL or newline: {path!r}")
    raw = path.encode("utf-8")  # lone surrogates -> UnicodeEncodeError (a ValueError)
    if len(raw) >= _PATH_MAX:
        raise ValueError(f"path too long ({len(raw)} bytes)")
    body = raw[1:]
    for part in body.split(b"/"):
        if part in (b"", b".", b".."):
            raise ValueError(f"path not normalized: {path!r}")
        if len(part) > _NAME_MAX:
            raise ValueError(f"path component longer than {_NAME_MAX} bytes")
    out = body.decode("latin-1").translate(_TRANSLATION)  # _TABLE per byte, at C speed
    # systemd escapes a leading "." (no hidden unit names for "/.dotdir");
    # dots that start later components stay as they are.
    if body[0] == 0x2E:
        out = "\\x2e" + out[1:]
    return out


def unit_name_from_path(path: str, suffix: str) -> str:
    """systemd's unit_name_from_path(), including the long-name hash fallback."""
    if not suffix.startswith(".") or suffix[1:] not in _UNIT_TYPES:
        raise ValueError(f"invalid unit suffix: {suffix!r}")
    name = escape_path(path) + suffix  # pure ASCII, so len() == byte length
    if len(name) < UNIT_NAME_MAX:
        return name
    # unit_name_hash_long(): the hash covers the *full* name including the
    # suffix, and siphash24_string() hashes strlen(s) + 1 bytes, i.e. the
    # C string's terminating NUL too. Keep a prefix sized so the result is
    # exactly 255 bytes: prefix + "_" + 16 hex + "." + type.
    return hash_long_name(name)


def hash_long_name(name: str) -> str:
    """systemd's unit_name_hash_long() for an ASCII unit name of 256 bytes or more; a shorter name as is.

    Used for path-derived names as systemd does, and for kvmpod's own units named after a volume."""
    if len(name) < UNIT_NAME_MAX:
        return name
    prefix, dot, unit_type = name.rpartition(".")
    h = siphash24(name.encode("ascii") + b"\0", _LONG_NAME_KEY)
    keep = UNIT_NAME_MAX - 1 - len(unit_type) - _HASH_CHARS - 2
    return name[:keep] + "_" + h.to_bytes(8, "little").hex() + dot + unit_type


def mount_unit_name(where: str) -> str:
    """Name of the .mount unit systemd expects for mount point `where`."""
    return unit_name_from_path(where, ".mount")
