"""An installed kvmpod builds its stage1 from its own installed files: the layout packaging/install-tree
makes is found from the package's path, copied into the root as it is, compiled there, and hashed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.images import stage1
from kvmpod.host.images.installed_tree import (CLI_IN_ROOT, GENERATOR_IN_ROOT, PACKAGE_IN_ROOT, NotInstalled,
                                               installed_tree)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """packaging/install-tree's own layout in tmp_path/root (what the .deb and the RPM install)."""
    root = tmp_path / "root"
    subprocess.run([str(REPO / "packaging/install-tree"), str(root)], check=True)
    return root


def test_the_installed_layout_is_found_from_the_package(installed: Path):
    package = installed / PACKAGE_IN_ROOT
    (package / "__pycache__").mkdir()
    (package / "__pycache__/cli.cpython-311.pyc").write_bytes(b"bytecode")
    tree = installed_tree(package)
    dests = {dest: (source, mode) for dest, source, mode in tree.files}
    assert dests[GENERATOR_IN_ROOT] == (str(installed / GENERATOR_IN_ROOT), 0o755)
    assert dests[CLI_IN_ROOT] == (str(installed / CLI_IN_ROOT), 0o755)
    assert dests[f"{PACKAGE_IN_ROOT}/guest/generator.py"] == (str(package / "guest/generator.py"), 0o644)
    assert not any("__pycache__" in dest for dest in dests)
    # every file install-tree put in the package, nothing else
    shipped = {str(p.relative_to(installed)) for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {d for d in dests if d.startswith(PACKAGE_IN_ROOT)} == shipped


def test_the_digest_follows_every_files_content(installed: Path):
    package = installed / PACKAGE_IN_ROOT
    first = installed_tree(package).digest()
    assert installed_tree(package).digest() == first
    with open(package / "guest/generator.py", "a") as f:
        f.write("# changed\n")
    second = installed_tree(package).digest()
    assert second != first
    assert stage1.stage1_hash("base", installed_tree(package)) != stage1.stage1_hash("base2", installed_tree(package))
    os.chmod(installed / GENERATOR_IN_ROOT, 0o700)  # the mode in the root is the package's, not the host's
    assert installed_tree(package).digest() == second


def test_not_installed_as_a_package_says_what_to_do(installed: Path, tmp_path: Path):
    site = tmp_path / "venv/lib/python3.11/site-packages/kvmpod"
    shutil.copytree(installed / PACKAGE_IN_ROOT, site)
    with pytest.raises(NotInstalled, match=r"a pip install has no guest launcher\): install kvmpod's .deb, or give "
                                           "kvmpod stage1 build --deb FILE"):
        installed_tree(site)
    (installed / GENERATOR_IN_ROOT).unlink()
    with pytest.raises(NotInstalled, match="has no .*kvmpod-generator: reinstall kvmpod's .deb"):
        installed_tree(installed / PACKAGE_IN_ROOT)


def test_install_copies_into_the_root_and_compiles_there(installed: Path, tmp_path: Path):
    target = tmp_path / "stage1-root"
    (target / "usr/bin").mkdir(parents=True)
    (target / CLI_IN_ROOT).symlink_to("/etc/passwd")  # replaced, never written through
    calls = []
    installed_tree(installed / PACKAGE_IN_ROOT).install(target, lambda root, *argv: calls.append((root, argv)))
    assert calls == [(target, ("py3compile", "/" + PACKAGE_IN_ROOT))]
    assert not (target / CLI_IN_ROOT).is_symlink()
    assert (target / CLI_IN_ROOT).read_bytes() == (installed / CLI_IN_ROOT).read_bytes()
    assert oct((target / GENERATOR_IN_ROOT).stat().st_mode & 0o777) == oct(0o755)
    assert (target / PACKAGE_IN_ROOT / "guest/generator.py").read_bytes() == \
        (installed / PACKAGE_IN_ROOT / "guest/generator.py").read_bytes()


def test_the_installed_cli_chooses_its_installed_files(installed: Path, tmp_path: Path):
    """The installed launcher imports the installed package (not this checkout), and that package
    knows it is not a checkout: stage1 build takes its installed files."""
    code = ("from kvmpod.host.images import stage1, installed_tree as t; "
            "print(stage1.BUILD_DEB.is_file(), t.installed_tree().name, t.PACKAGE_DIR)")
    path = str(installed / "usr/lib/python3/dist-packages")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {path!r}); {code}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", str(installed / "usr"), str(installed / PACKAGE_IN_ROOT)]
