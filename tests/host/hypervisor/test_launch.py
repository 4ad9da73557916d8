"""kvmpod's children (`python3 -m kvmpod.host.hypervisor.supervisor`, a pod's transient unit) import
the kvmpod that started them, wherever it is installed: checked by running a real child Python."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kvmpod
from kvmpod.host.hypervisor.launch import children_import_this_kvmpod, launch_environment

REPO = Path(__file__).resolve().parents[3]


def test_a_child_python_started_as_kvmpod_starts_its_children_finds_this_kvmpod(tmp_path: Path):
    copy = tmp_path / "prefix/lib/python3/dist-packages"
    shutil.copytree(Path(kvmpod.__file__).parent, copy / "kvmpod", ignore=shutil.ignore_patterns("__pycache__"))
    # A launcher as packaging/launchers/kvmpod, for the copy: -I ignores PYTHONPATH, so only what it
    # puts on its own path and what children_import_this_kvmpod exports can let its child find kvmpod.
    launcher = (f"import sys, subprocess; sys.path.insert(0, {str(copy)!r})\n"
                "from kvmpod.host.hypervisor.launch import children_import_this_kvmpod\n"
                "children_import_this_kvmpod()\n"
                "sys.exit(subprocess.run([sys.executable, '-c', 'import kvmpod; print(kvmpod.__file__)']).returncode)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    child = subprocess.run([sys.executable, "-I", "-c", launcher], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert child.stdout.strip() == str(copy / "kvmpod/__init__.py"), child.stderr


def test_the_path_is_put_first_once_and_given_to_a_supervised_hypervisors_unit(monkeypatch):
    root = str(Path(kvmpod.__file__).resolve().parents[1])
    environ = {"PYTHONPATH": "/elsewhere"}
    children_import_this_kvmpod(environ)
    children_import_this_kvmpod(environ)
    assert environ["PYTHONPATH"] == f"{root}:/elsewhere"
    monkeypatch.setenv("PYTHONPATH", environ["PYTHONPATH"])
    assert launch_environment("qemu") == {"PYTHONPATH": f"{root}:/elsewhere"}
