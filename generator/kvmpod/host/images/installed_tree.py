"""kvmpod's own files as they are installed on this host, for the stage1 of a kvmpod that runs
without its checkout (installed from the .deb or the RPM: packaging/install-tree's layout).

The guest must run the very code the host runs (the host renders the guest's units,
host.pods.prerendered_units), so an installed kvmpod puts its own installed files into the stage1
root, in the same places, instead of a .deb it does not have:

    <prefix>/lib/python3/dist-packages/kvmpod/           the package this process imported
    <prefix>/lib/systemd/system-generators/kvmpod-generator
    <prefix>/bin/kvmpod

<prefix> is found from the package's own path (…/lib/python3/dist-packages/kvmpod → <prefix>), so a
package installed under /usr, or unpacked into any root (dpkg -x, a chroot), brings its launchers
along. A kvmpod installed with pip into a site-packages has no generator launcher: it is refused
with what to do instead (install the .deb, or give kvmpod stage1 build --deb FILE).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../kvmpod (this module is kvmpod/host/images/)
PACKAGE_IN_ROOT = "usr/lib/python3/dist-packages/kvmpod"
GENERATOR_IN_ROOT = "usr/lib/systemd/system-generators/kvmpod-generator"
CLI_IN_ROOT = "usr/bin/kvmpod"


class NotInstalled(RuntimeError):
    """This kvmpod's files are not laid out as its packages install them."""


@dataclass(frozen=True)
class InstalledTree:
    """The files to put into a stage1 root: (path in the root, path on this host, mode)."""

    files: tuple[tuple[str, str, int], ...]
    name: str  # for progress lines: where it came from

    def digest(self) -> str:
        """Content and modes of every file, in order: a different kvmpod is a different stage1."""
        h = hashlib.sha256()
        for dest, source, mode in self.files:
            h.update(f"{dest}\0{mode:o}\0".encode())
            with open(source, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    def install(self, root: Path, run_in_root: Callable[..., None]) -> None:
        """Copy the files into `root` (a stage1 tree), then compile the package's bytecode in the root
        as the .deb's postinst does (py3compile), so the guest's generator never compiles at boot."""
        for dest, source, mode in self.files:
            target = root / dest
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copyfile(source, target)
            os.chmod(target, mode)
        run_in_root(root, "py3compile", "/" + PACKAGE_IN_ROOT)


def installed_tree(package_dir: Path = PACKAGE_DIR) -> InstalledTree:
    """This process's kvmpod as installed; NotInstalled saying why it cannot be used."""
    if package_dir.parent.name != "dist-packages" or package_dir.parents[1].name != "python3" \
            or package_dir.parents[2].name != "lib":
        raise NotInstalled(f"kvmpod runs from {package_dir}, not from a package's .../lib/python3/dist-packages/"
                           f"kvmpod (as the .deb and the RPM install it; a pip install has no guest launcher): "
                           f"install kvmpod's .deb, or give kvmpod stage1 build --deb FILE")
    prefix = package_dir.parents[3]
    launchers = [(GENERATOR_IN_ROOT, prefix / "lib/systemd/system-generators/kvmpod-generator"),
                 (CLI_IN_ROOT, prefix / "bin/kvmpod")]
    missing = [str(path) for _, path in launchers if not path.is_file()]
    if missing:
        raise NotInstalled(f"kvmpod's package at {package_dir} has no {' nor '.join(missing)}: reinstall kvmpod's "
                           f".deb, or give kvmpod stage1 build --deb FILE")
    files = []
    for directory, subdirs, names in os.walk(package_dir):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            source = Path(directory, name)
            if source.is_symlink() or not source.is_file():
                continue
            files.append((f"{PACKAGE_IN_ROOT}/{source.relative_to(package_dir)}", str(source), 0o644))
    files += [(dest, str(path), 0o755) for dest, path in launchers]
    return InstalledTree(tuple(files), str(prefix))
