"""The C library's handle and the errno check every libc call of the host makes (host/linux/libc.py)."""

import ctypes
import errno
import os

import pytest

from kvmpod.host.linux.libc import check, libc


def test_the_handle_calls_this_processs_c_library():
    assert libc().getpid() == os.getpid()


def test_a_call_that_failed_is_an_oserror_naming_it_with_its_errno():
    check(0, "never raised")
    result = libc().umount2(b"/nonexistent-kvmpod-test", 0)  # fails: EINVAL or ENOENT, or EPERM without root
    assert result == -1
    with pytest.raises(OSError) as error:
        check(result, "umount2(/nonexistent-kvmpod-test)")
    assert error.value.errno in (errno.EINVAL, errno.ENOENT, errno.EPERM)
    assert str(error.value) == (f"[Errno {error.value.errno}] umount2(/nonexistent-kvmpod-test): "
                                f"{os.strerror(error.value.errno)}")


def test_the_errno_is_the_failed_calls_own():
    ctypes.set_errno(errno.EBUSY)
    with pytest.raises(OSError, match=r"^\[Errno 16\] mount x: Device or resource busy$"):
        check(-1, "mount x")
