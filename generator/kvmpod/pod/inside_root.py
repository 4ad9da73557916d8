"""Resolve a path inside an app's rootfs as if that rootfs were `/` (rkt's EvaluateSymlinksInsideApp,
Go's securejoin): `..` and symlinks, absolute or relative, chained, are followed but clamped at the
root, so the result can never name a place outside it.
"""

import os
from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot

# The kernel gives up after 40 links (MAXSYMLINKS); a longer chain is a loop or an attack.
MAX_SYMLINKS = 40
PATH_MAX = 4096

ReadLink = Callable[[str], str | None]  # on-disk path -> link target, or None if not a symlink


class UnsafePath(ValueError):
    pass


def resolve_inside_root(disk_root: str, path: str, readlink: ReadLink) -> str:
    """The absolute path, relative to the root, that `path` reaches inside `disk_root`.

    `disk_root` is where the rootfs is on the disk being read; `readlink` looks paths up there.
    Components that do not exist yet are kept as written: systemd creates them at mount time.
    """
    pending = [c for c in reversed(path.split("/")) if c]
    resolved: list[str] = []
    links = 0
    while pending:
        component = pending.pop()
        if component == ".":
            continue
        if component == "..":
            if resolved:
                resolved.pop()  # clamped: ".." at the root stays at the root
            continue
        target = readlink(disk_root.rstrip("/") + "/" + "/".join(resolved + [component]))
        if target is None:
            resolved.append(component)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise UnsafePath(f"more than {MAX_SYMLINKS} symlinks while resolving {path!r} (a loop?)")
        if target.startswith("/"):
            resolved = []  # absolute links are absolute inside the app, not on the host
        pending.extend(c for c in reversed(target.split("/")) if c)
        if len(pending) > PATH_MAX:
            raise UnsafePath(f"resolving {path!r} through symlinks grows without bound")
    result = "/" + "/".join(resolved)
    if len(result) >= PATH_MAX:
        raise UnsafePath(f"{path!r} resolves to a path longer than PATH_MAX ({PATH_MAX})")
    return result


def clean_path(path: str) -> str:
    """Lexically normalized absolute path: no `.`, `..` (clamped at `/`), or doubled slashes."""
    return resolve_inside_root("/", path, lambda _: None)


def readlink_on_disk(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # not a link, or does not exist (yet): both are plain components
        return None
