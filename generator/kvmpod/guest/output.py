"""Write the plan into a generator output directory, all or nothing; or print it."""

import os
from _collections_abc import Callable  # collections.abc without the collections package: ~2 ms at boot

from .unitfile import GeneratedFile, Output


def write_outputs(outputs: list[Output], directory: str) -> None:
    """Exclusive create (a name written twice is an error, never an overwrite); on any error
    remove everything this call created, then re-raise."""
    created: list[tuple[str, bool]] = []  # (path, is_dir), in creation order
    try:
        for output in outputs:
            path = os.path.join(directory, output.path)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent)
                created.append((parent, True))
            if isinstance(output, GeneratedFile):
                with open(path, "x", encoding="utf-8") as f:
                    created.append((path, False))
                    f.write(output.content)
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
