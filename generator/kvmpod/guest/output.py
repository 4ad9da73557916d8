"""Write the plan into a generator output directory, all or nothing; or print it."""

import os
from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot

from .unitfile import GeneratedFile, Output

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # exclusive create, as open(path, "x")


def write_outputs(outputs: list[Output], directory: str) -> None:
    """Exclusive create (a name written twice is an error, never an overwrite); on any error
    remove everything this call created, then re-raise."""
    created: list[tuple[str, bool]] = []  # (path, is_dir), in creation order
    known_dirs: set[str] = set()  # each checked once: a big pod has thousands of files in a few directories
    try:
        for output in outputs:
            path = os.path.join(directory, output.path)
            parent = os.path.dirname(path)
            if parent not in known_dirs:
                if not os.path.isdir(parent):
                    os.makedirs(parent)
                    created.append((parent, True))
                known_dirs.add(parent)
            if isinstance(output, GeneratedFile):
                # os.open/os.write, not open(): half the time per file, the same bytes (UTF-8, "\n").
                data = output.content.encode("utf-8")
                fd = os.open(path, _NEW_FILE, 0o666)
                created.append((path, False))
                try:
                    while data:
                        data = data[os.write(fd, data):]
                finally:
                    os.close(fd)
            else:
                os.symlink(output.target, path)
                created.append((path, False))
    except OSError:
        for path, is_dir in reversed(created):
            try:
                os.rmdir(path) if is_dir else os.unlink(path)
            except OSError:
                pass
        raise


def print_outputs(outputs: list[Output], write: Callable[[str], object]) -> None:
    """Each file under a `==> name <==` line (as `head` shows several files); links as `name -> target`."""
    for output in outputs:
        if isinstance(output, GeneratedFile):
            write(f"==> {output.path} <==\n{output.content}\n")
        else:
            write(f"==> {output.path} -> {output.target} <==\n\n")
