"""What a pod boots with, checked before anything of the pod is made (issue 22): the hypervisor's
binary, the kernel and the initrd. A missing or unusable one is an error naming it, never a pod
directory left behind with a VM that could not start, and never a hang (nothing is run to check).

- the hypervisor: found on PATH (or the given path) as an executable regular file;
- the kernel: a readable regular file that is an x86 Linux boot image (the "HdrS" magic of the
  boot protocol at offset 0x202, which QEMU's -kernel and lkvm need), so an empty or truncated
  stage1 kernel is caught here;
- the initrd: a readable, non-empty regular file.
"""

import os
import shutil
import stat

from ...pod.problems import InvalidInput, Problem

BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"


def _regular(path: str) -> tuple[os.stat_result | None, str | None]:
    try:
        st = os.stat(path)
    except OSError as error:
        return None, f"{path!r} cannot be used ({error.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{path!r} is not a regular file"
    return st, None


def kernel_problem(path: str) -> str | None:
    st, problem = _regular(path)
    if problem is not None:
        return problem
    try:
        with open(path, "rb") as f:
            f.seek(BZIMAGE_MAGIC_OFFSET)
            magic = f.read(len(BZIMAGE_MAGIC))
    except OSError as error:
        return f"{path!r} cannot be read ({error.strerror})"
    if magic != BZIMAGE_MAGIC:
        return f"{path!r} is not a Linux kernel image ({st.st_size} bytes, no boot header: empty or damaged)"
    return None


def initrd_problem(path: str) -> str | None:
    st, problem = _regular(path)
    if problem is not None:
        return problem
    if st.st_size == 0:
        return f"{path!r} is empty"
    if not os.access(path, os.R_OK):
        return f"{path!r} is not readable"
    return None


def binary_problem(binary: str) -> str | None:
    found = shutil.which(binary)
    if found is None:
        return f"{binary!r} is not an executable on PATH; install it (Debian: qemu-system-x86)"
    return None


def check_boot_files(binary: str, stage1, field: str = "--stage1") -> None:
    """Raises InvalidInput naming every unusable one (see the module's docstring); `stage1` has the
    kernel's and the initrd's paths as .vmlinuz and .initrd (None: no initrd)."""
    kernel, initrd = stage1.vmlinuz, stage1.initrd
    problems = []
    if (why := binary_problem(binary)) is not None:
        problems.append(Problem("hypervisor", why))
    if (why := kernel_problem(kernel)) is not None:
        problems.append(Problem(f"{field} kernel", why + "; rebuild the stage1 (kvmpod stage1 build)"))
    if initrd is not None and (why := initrd_problem(initrd)) is not None:
        problems.append(Problem(f"{field} initrd", why + "; rebuild the stage1 (kvmpod stage1 build)"))
    if problems:
        raise InvalidInput(problems)
