"""The C library through ctypes, for the calls Python's os module lacks (prctl, unshare, mount, umount2):
its handle, and the check that turns a failed call's -1 into an OSError naming the call."""

import ctypes
import os


def libc() -> ctypes.CDLL:
    """This process's C library, with errno kept for `check` (use_errno)."""
    return ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    """OSError(errno, "<what>: <strerror>") when a libc call returned non-zero."""
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
