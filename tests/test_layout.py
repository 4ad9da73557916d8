"""The three rooms import one way only: host -> guest -> pod, never back (README, Development)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "generator" / "kvmpod"
MAY_IMPORT = {"pod": {"pod"}, "guest": {"pod", "guest"}, "host": {"pod", "guest", "host"}}


def kvmpod_imports(path: Path, room: str) -> set[str]:
    """The kvmpod rooms a module imports, relative or absolute."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                rooms.add(room)
            elif node.level == 2:
                rooms.add((node.module or "").split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("kvmpod."):
                rooms.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            rooms.update(a.name.split(".")[1] for a in node.names if a.name.startswith("kvmpod."))
    return rooms


def test_every_module_lives_in_a_room():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} >= set(MAY_IMPORT)


def test_imports_go_one_way():
    wrong = []
    for room, allowed in MAY_IMPORT.items():
        for module in sorted((PACKAGE / room).glob("*.py")):
            for target in kvmpod_imports(module, room) - allowed:
                wrong.append(f"{room}/{module.name} imports kvmpod.{target}")
    assert wrong == []


def test_the_checker_sees_a_backward_import(tmp_path):
    """Negative control: the test above would catch pod importing host."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..host.cli import main\nimport kvmpod.guest.status\n")
    assert kvmpod_imports(bad, "pod") == {"host", "guest"}
