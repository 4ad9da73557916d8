"""Reading what a guest wrote, on the host, as untrusted data (issue 22: a hostile guest).

Root in the guest controls everything in its pod share (<pod>/share, /run/kvmpod/pod in the guest).
The host reads from it only the files it asks for by name, and each one so that nothing the guest
made can reach outside the pod directory, block, or exhaust the host:

- every directory on the way is opened below the one before it (openat) with O_NOFOLLOW|O_DIRECTORY,
  starting from the pod directory: a symlink planted at share/ or share/apps is not followed;
- each file is opened O_PATH|O_NOFOLLOW first and fstat()ed: a symlink, FIFO, socket, device node
  or directory is reported as what it is and never opened for reading (opening a device can act on
  it, opening a FIFO can block); only a regular file is then reopened for reading, through its
  O_PATH descriptor (/proc/self/fd), so it is the very inode that was checked;
- at most `limit` bytes are read; a larger file is reported as too large, not read on;
- a name is one path component the host chose (an app of the pod): never a name the guest listed,
  so millions of entries or names that are not apps of the pod cost nothing and are ignored.

What could not be read is returned as a problem (a short sentence), never raised.
"""

import os
import stat
from dataclasses import dataclass

MAX_RECORD_BYTES = 4096
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


REFUSED = "refused.json"  # <pod>/share/refused.json: the records the supervisor did not copy out, and why


@dataclass(frozen=True)
class Record:
    """One file's bytes, or why it could not be read (data None; problem None: it does not exist)."""

    data: bytes | None
    problem: str | None = None


def is_component(name: str) -> bool:
    """One path component: no slash, no NUL, not . or .., at most 255 bytes."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        return False
    return 0 < size <= 255 and "/" not in name and "\0" not in name and name not in (".", "..")


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_dir_below(top: str, components: tuple[str, ...]) -> int:
    """A descriptor of top/c1/c2/..., each component opened below the last without following a link.
    Raises OSError (ELOOP or ENOTDIR for a symlink or a non-directory on the way)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for component in components:
            if not is_component(component):
                raise OSError(22, f"{component!r} is not a file name")
            below = os.open(component, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_at(dir_fd: int, name: str, limit: int = MAX_RECORD_BYTES) -> Record:
    """The file `name` in `dir_fd`, read as the module's docstring says."""
    if not is_component(name):
        return Record(None, f"{name!r:.80} is not a file name")
    try:
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return Record(None)
    except OSError as error:
        return Record(None, f"cannot be opened ({error.strerror})")
    try:
        mode = os.fstat(path_fd).st_mode
        if not stat.S_ISREG(mode):
            return Record(None, f"is {_kind(mode)}, not a regular file")
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        os.close(path_fd)
        return Record(None, f"cannot be opened ({error.strerror})")
    os.close(path_fd)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        return Record(None, f"cannot be read ({error.strerror})")
    finally:
        os.close(fd)
    if size > limit:
        return Record(None, f"is larger than {limit} bytes")
    return Record(b"".join(chunks))


def read_records(top: str, directory: tuple[str, ...], names: list[str],
                 limit: int = MAX_RECORD_BYTES) -> dict[str, Record]:
    """Each of `names` in top/directory/..., read as the module's docstring says; a directory on the
    way that is missing gives records that do not exist, one that is a link or not a directory
    gives each name that problem."""
    try:
        dir_fd = open_dir_below(top, directory)
    except FileNotFoundError:
        return {name: Record(None) for name in names}
    except OSError as error:
        where = "/".join(directory)
        why = "is a symbolic link or not a directory" if error.errno in (40, 20) else f"cannot be opened " \
                                                                                     f"({error.strerror})"
        return {name: Record(None, f"{where} {why}") for name in names}
    try:
        return {name: read_regular_at(dir_fd, name, limit) for name in names}
    finally:
        os.close(dir_fd)
