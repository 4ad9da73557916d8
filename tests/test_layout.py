"""The rooms import one way only (README, Development).

The package: host -> guest -> pod, never back. Inside host/, its rooms too:

    cli.py, pod_commands.py, run.py   the commands, on top: may import every room
    hypervisor/                       argv, volumes and their staging, supervisor, virtiofs, launch, QMP
    pods/                             pod directories, app output, machined, staging, prerendered units
    images/  net/                     images (ACI, OCI, the store, stage1) and networks: leaves
    linux/                            Linux calls through libc (its handle, prctl): under every room

hypervisor may import pods (the pod directory's layout: its share, log and QMP paths) and net (the
NICs on its command line); pods, images and net import no other host room but linux.

Why linux/: a child that must die with kvmpod (PR_SET_PDEATHSIG) is started in hypervisor/ (QEMU,
virtiofsd), pods/ (a root's copy) and images/ (the stage1 build's copy), and images may import
neither of the others; it is not model code either (pod/ has no host effects). So the one
die_with_parent lives in a leaf every room may import, which itself imports no other host room.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "generator" / "kvmpod"
MAY_IMPORT = {"pod": {"pod"}, "guest": {"pod", "guest"}, "host": {"pod", "guest", "host"}}
HOST_ROOMS = {"hypervisor": {"hypervisor", "pods", "net", "linux"}, "pods": {"pods", "linux"},
              "images": {"images", "linux"}, "net": {"net", "linux"}, "linux": {"linux"}}
HOST_TOP = {"__init__.py", "cli.py", "pod_commands.py", "run.py"}


def kvmpod_imports(path: Path, package: str) -> set[str]:
    """The kvmpod rooms a module in `package` (dotted, under kvmpod) imports, relative or absolute."""
    return {target.split(".")[0] for target in kvmpod_targets(path, package)}


def kvmpod_targets(path: Path, package: str) -> set[str]:
    """The kvmpod modules a module in `package` (dotted, under kvmpod) imports, as dotted paths."""
    targets = set()
    parts = package.split(".")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if node.module:
                    targets.add(module)
                else:
                    targets.update(f"{module}.{a.name}" for a in node.names)
            elif (node.module or "").startswith("kvmpod."):
                targets.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            targets.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("kvmpod."))
    return targets


def test_every_module_lives_in_a_room():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} >= set(MAY_IMPORT)


def test_imports_go_one_way():
    wrong = []
    for room, allowed in MAY_IMPORT.items():
        for module in sorted((PACKAGE / room).rglob("*.py")):
            package = ".".join(module.relative_to(PACKAGE).parent.parts)
            for target in kvmpod_imports(module, package) - allowed:
                wrong.append(f"{module.relative_to(PACKAGE)} imports kvmpod.{target}")
    assert wrong == []


def test_host_has_rooms_and_only_commands_on_top():
    assert {p.name for p in (PACKAGE / "host").glob("*.py")} <= HOST_TOP
    rooms = {p.name for p in (PACKAGE / "host").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == set(HOST_ROOMS)


def test_host_rooms_import_one_way():
    wrong = []
    for room, allowed in HOST_ROOMS.items():
        for module in sorted((PACKAGE / "host" / room).rglob("*.py")):
            package = ".".join(module.relative_to(PACKAGE).parent.parts)
            for target in kvmpod_targets(module, package):
                parts = target.split(".")
                if parts[0] == "host" and (len(parts) < 2 or parts[1] not in allowed):
                    wrong.append(f"{module.relative_to(PACKAGE)} imports kvmpod.{target}")
    assert wrong == []


def test_the_checker_sees_a_backward_import(tmp_path):
    """Negative controls: the tests above would catch pod importing host, and images importing pods."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..host.cli import main\nimport kvmpod.guest.status\n")
    assert kvmpod_imports(bad, "pod") == {"host", "guest"}
    bad.write_text("from ..pods.pod_dirs import PodDir\nfrom . import oci\nfrom ...pod import names\n")
    assert kvmpod_targets(bad, "host.images") == {"host.pods.pod_dirs", "host.images.oci", "pod"}
