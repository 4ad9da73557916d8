"""Read a small text file from a tree that may be hostile (the guest's, an app's), safely.

Every file the generator reads (the pod manifest, networks.json, image manifests, the app's and the
guest's /etc/passwd and /etc/group, /proc/cmdline) goes through `read_text`:
- opened with O_NONBLOCK|O_NOCTTY, so a FIFO or a device cannot block the boot on open();
- fstat() of what was opened (not of the name, which could change): regular files only, so a FIFO,
  a socket, /dev/zero or a directory is refused instead of read;
- at most MAX_FILE_BYTES, read in one bounded read: a real manifest is a few KiB, a large passwd a
  few hundred; 4 MiB is far above both and bounds the generator's memory at boot.
Anything else is invalid input naming the file, so the pod fails closed.

The host's commands read the files they are given the same way (`read_input_file`): a FIFO given
as --manifest is an error, not a hang.

It lives in `pod` because the host reads the same guest-tree files (image manifests for `explain`).
"""

import os

from .problems import InvalidInput, Problem

MAX_FILE_BYTES = 4 * 1024 * 1024

_KINDS = ((0o010000, "a FIFO"), (0o140000, "a socket"), (0o020000, "a character device"),
          (0o060000, "a block device"), (0o040000, "a directory"))


def read_bytes(path: str, field: str | None = None, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The bytes of the regular file at `path` (at most `limit`); None when it does not exist.

    Problems are reported under `field` (default: the path itself)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _refuse(path, field, limit, f"cannot be opened ({error.strerror})") from None
    except ValueError:  # a NUL in the path
        raise _refuse(path, field, limit, "is not a valid path") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o170000 != 0o100000:
            kind = next((name for bits, name in _KINDS if mode & 0o170000 == bits), "not a regular file")
            raise _refuse(path, field, limit, f"is {kind}")
        chunks = []
        size = 0
        while size <= limit:  # /proc files report size 0: read until end, never past the limit
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _refuse(path, field, limit, "is too large")
    except OSError as error:
        raise _refuse(path, field, limit, f"cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: str, field: str | None = None, limit: int = MAX_FILE_BYTES) -> str | None:
    """The UTF-8 text of the regular file at `path`; None when it does not exist.

    Problems are reported under `field` (default: the path itself)."""
    data = read_bytes(path, field, limit)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refuse(path, field, limit, f"is not UTF-8 ({error.reason} at byte {error.start})") from None


def read_input_file(path: str, option: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A file a host command was given (`--manifest`, `--networks`, `--cni-result`, `--set-env-file`):
    read as the guest reads its files (non-blocking, regular files only, at most `limit`), once.
    A missing file is an error naming `option`."""
    data = read_bytes(path, f"{option} {path!r}" if path else option, limit)
    if data is None:
        raise InvalidInput([Problem(option, f"{path!r} does not exist; give an existing file")])
    return data


def _refuse(path: str, field: str | None, limit: int, reason: str) -> InvalidInput:
    return InvalidInput([Problem(field or path, f"{reason}; it must be a regular UTF-8 file of at most "
                                                f"{limit // (1024 * 1024)} MiB")])
