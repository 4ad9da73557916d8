"""exec[0] as rkt 1.30 found it (stage1/init/common/pod.go FindBinPath, lookupPathInsideApp).

appc allows a program that is not an absolute path: a name with a slash is relative to the
working directory; a bare name is looked up in the app's own PATH (its environment), else in the
working directory, /bin and /usr/bin, each inside the app's rootfs with symlinks resolved inside
it. The result is the path inside the app, unresolved, as rkt wrote it into ExecStart=.
"""

import os
import stat

from ..pod.inside_root import UnsafePath, clean_path, readlink_on_disk, resolve_inside_root


def find_program(rootfs_on_disk: str, program: str, working_directory: str, path_variable: str | None) -> str | None:
    """The program's absolute path inside the app, or None when no executable file is there."""
    if program.startswith("/"):
        return program
    if "/" in program:
        return clean_path(f"{working_directory}/{program}")
    directories = path_variable.split(":") if path_variable is not None else [working_directory, "/bin", "/usr/bin"]
    for directory in directories:
        if not directory.startswith("/"):
            directory = f"{working_directory}/{directory}"  # rkt: relative PATH entries join the working dir
        candidate = clean_path(f"{directory}/{program}")
        try:
            real = resolve_inside_root(rootfs_on_disk, candidate, readlink_on_disk)
            st = os.stat(rootfs_on_disk.rstrip("/") + real)
        except (UnsafePath, OSError):
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    return None
