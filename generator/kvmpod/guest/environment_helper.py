"""Environment variables systemd cannot pass, delivered anyway.

appc allows `.` and `-` in variable names (^[A-Za-z_][A-Za-z_0-9.-]*$); systemd 252 accepts only
letters, digits and `_` in Environment= and EnvironmentFile= ("Invalid environment assignment,
ignoring"), so such a variable would silently never reach the app. rkt ran every app through its
own exec helper for this. kvmpod does the same only for apps that need it: the guest's static
busybox is bound read-only into the app's root and runs as `env NAME=VALUE... PROGRAM ARGS`, which
puts the variables in the environment and execs the app's program. Names systemd accepts still go
through Environment=.

A static busybox is needed because the app's root has none of the guest's libraries; the guest
gets it from Debian's busybox-static.
"""

BUSYBOX = "/bin/busybox"
HELPER_IN_APP = "/run/.kvmpod-env"  # where the app's namespace sees it
_SYSTEMD_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def systemd_accepts(name: str) -> bool:
    return _SYSTEMD_NAME_CHARS.issuperset(name) and not name[:1].isdigit()


def is_static_executable(path: str) -> bool:
    """An ELF executable with no program interpreter (PT_INTERP), i.e. it runs in an empty root."""
    import struct  # only pods with such variables pay

    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False  # kvmpod's guests are 64-bit little-endian
            phoff, = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    if phentsize < 4 or len(table) < phentsize * phnum:
        return False  # truncated, or not a program header table anything could run
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))
