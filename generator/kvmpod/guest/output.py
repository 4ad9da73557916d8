"""Write the plan into a generator output directory, all or nothing; or print it."""

import os
from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot

from .unitfile import GeneratedFile, Output

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_outputs(outputs: list[Output], directory: str) -> None:
    """Exclusive create (a name written twice is an error, never an overwrite); on any error
    (or any exception at all) remove everything this call created, then re-raise.

    Nothing below `directory` is followed if it is a symlink: each directory is opened with
    O_NOFOLLOW relative to its parent and each file created with O_EXCL|O_NOFOLLOW, so a link
    planted at `<app>.service.requires` (or at a unit's name) fails the write instead of
    redirecting it.
    """
    created: list[tuple[str, bool]] = []  # (path, is_dir), in creation order
    fds: dict[str, int] = {}
    try:
        fds[""] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for output in outputs:
            data = output.content.encode("utf-8") if isinstance(output, GeneratedFile) else b""
            parent, _, name = output.path.rpartition("/")
            parent_fd = _directory_fd(directory, parent, fds, created)
            path = os.path.join(directory, output.path)
            try:
                if isinstance(output, GeneratedFile):
                    fd = os.open(name, _FILE_FLAGS, 0o644, dir_fd=parent_fd)
                    created.append((path, False))
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                else:
                    os.symlink(output.target, name, dir_fd=parent_fd)
                    created.append((path, False))
            except OSError as error:
                raise OSError(error.errno, error.strerror, path) from None
    except BaseException:
        for path, is_dir in reversed(created):
            try:
                os.rmdir(path) if is_dir else os.unlink(path)
            except OSError:
                pass
        raise
    finally:
        for fd in fds.values():
            os.close(fd)


def _directory_fd(directory: str, relative: str, fds: dict[str, int], created: list[tuple[str, bool]]) -> int:
    """An fd of `directory/relative`, made (and recorded in `created`) if missing, never through a symlink."""
    if relative in fds:
        return fds[relative]
    above, _, name = relative.rpartition("/")
    parent_fd = _directory_fd(directory, above, fds, created)
    path = os.path.join(directory, relative)
    try:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            created.append((path, True))
        except FileExistsError:
            pass
        fds[relative] = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from None
    return fds[relative]


def print_outputs(outputs: list[Output], write: Callable[[str], object]) -> None:
    """Each file under a `==> name <==` line (as `head` shows several files); links as `name -> target`."""
    for output in outputs:
        if isinstance(output, GeneratedFile):
            write(f"==> {output.path} <==\n{output.content}\n")
        else:
            write(f"==> {output.path} -> {output.target} <==\n\n")
