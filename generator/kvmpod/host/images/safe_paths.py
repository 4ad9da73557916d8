"""Writing and reading inside an unpacked image without ever leaving it (shared by the ACI and OCI
unpackers and the image config's lookups).

Every path is walked one component at a time through directory file descriptors opened with
O_NOFOLLOW: a symlink in the image is never followed by the host while writing. Reading a file
the image names (its /etc/passwd, a program on its PATH) resolves symlinks as the image's own
chroot would: an absolute target starts again at the image's root, `..` stops at the root.
"""

import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40  # as the kernel's path walk


class Refused(Exception):
    """A member or path that would write outside the image, or that the unpacker does not make."""


def open_dir(root_fd: int, parts: list[str], create: bool, mode: int = 0o755, *, missing_ok: bool = False,
             path: str | None = None) -> int | None:
    """An fd of the image's directory `parts`, walked without following any symlink; with `create`,
    missing directories on the way are made (mode `mode`); without, a missing one is None when
    `missing_ok`. `path`: what the refusal names (default the directory itself)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if missing_ok and not create:
                    os.close(fd)
                    return None
                raise Refused(f"{path or '/'.join(parts)!r} goes through {part!r}, which is missing") from None
            except OSError as error:
                raise Refused(f"{path or '/'.join(parts)!r} goes through {part!r}, which is not a directory of the "
                              f"image (a symlink or a file: {error.strerror})") from None
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent(root_fd: int, parts: list[str], create: bool, mode: int = 0o755) -> int:
    """An fd of the directory holding parts[-1] (see open_dir)."""
    fd = open_dir(root_fd, parts[:-1], create, mode, path="/".join(parts))
    assert fd is not None
    return fd


def escapes(link_dir_parts: list[str], target: str) -> bool:
    """A relative symlink target that climbs above the root from the link's directory
    (`link_dir_parts`: the directories from the root down to the link's parent)."""
    if target.startswith("/"):
        return False
    depth = len(link_dir_parts)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def resolve_in_root(root: str, path: str) -> list[str]:
    """The components under `root` that `path` (inside the image) names, every symlink resolved as
    in a chroot at `root`; the last components may not exist. Refused for a symlink loop."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()
    current: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = current + [part]
        full = os.path.join(root, *candidate)
        if os.path.islink(full):
            links += 1
            if links > MAX_SYMLINKS:
                raise Refused(f"{path!r}: too many levels of symbolic links in the image")
            target = os.readlink(full)
            if target.startswith("/"):
                current = []
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        current = candidate
    return current


def read_in_root(root: str, path: str, limit: int = 1 << 20) -> bytes | None:
    """The bytes of the regular file `path` inside the image (symlinks resolved inside it), at most
    `limit` of them; None when there is no such regular file."""
    parts = resolve_in_root(root, path)
    if not parts:
        return None
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except OSError:
        return None
    try:
        fd = open_parent(root_fd, parts, create=False)
    except Refused:
        return None
    finally:
        os.close(root_fd)
    try:
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit)
