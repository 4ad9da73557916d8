"""What the generator writes for every golden case loads in the real systemd, dependency graph
included, without a complaint.

The generator runs here and now, per case (as in the golden test), and its fresh output is what
`systemd-analyze verify` loads: never the checked-in expected/ trees, which a regeneration
(KVMPOD_UPDATE_GOLDEN) would have rewritten from the very code under test.
"""

import shutil
from pathlib import Path

import pytest

from systemd_tools import verify_units, write_app_service

from .test_generator_cases import run_case

CASES = Path(__file__).parent / "generator_cases"
TREES = sorted(p for p in CASES.glob("*/expected") if p.is_dir())
CASES_WITH_OUTPUT = [p.parent for p in TREES]


def apps_wired_in(tree: Path) -> list[str]:
    return sorted({p.name.split(".service.")[0] for p in tree.iterdir() if p.name.endswith((".service.requires", ".service.d"))})


def complaints(stderr: str, units: Path) -> list[str]:
    """verify's complaints, less one it makes wrongly: it looks for ExecStart= binaries on this host
    even under RootDirectory= (systemd 252), and the apps' binaries live in their own rootfs."""
    missing_here = set()
    for service in units.glob("*.service"):
        for line in service.read_text().splitlines():
            key, _, command = line.partition("=")
            if key in ("ExecStart", "ExecStartPre", "ExecStopPost") and "RootDirectory=" in service.read_text():
                binary = command.split()[0].lstrip("@").strip('"')
                if not Path(binary).exists():
                    missing_here.add(f"{service.name}: Command {binary} is not executable: No such file or directory")
    return [line for line in stderr.splitlines() if line not in missing_here]


def test_every_generator_case_with_output_is_checked():
    assert len(TREES) >= 15


def materialize(tree: dict[str, tuple[str, str]], directory: Path) -> None:
    """Write a snapshot ({path: ("file", text) | ("link", target)}) as real files and links."""
    for rel, (kind, value) in tree.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            path.symlink_to(value)
        else:
            path.write_text(value, encoding="utf-8")


def generate_now(case: Path, fs, directory: Path) -> None:
    """Run the generator on `case` (fake filesystem, as the golden test does) and write what it wrote
    into the real `directory`."""
    _, tree = run_case(case, fs)
    assert tree, f"the generator wrote nothing for {case.name}"
    fs.pause()
    materialize(tree, directory)


@pytest.mark.parametrize("case", CASES_WITH_OUTPUT, ids=lambda p: p.name)
def test_generated_tree_loads_in_systemd(case: Path, tmp_path: Path, fs):
    units = tmp_path / "generator"
    generate_now(case, fs, units)
    apps = tmp_path / "apps"
    apps.mkdir()
    app_units = [write_app_service(apps, app) for app in apps_wired_in(units) if not (units / f"{app}.service").exists()]
    own_units = sorted(p for p in units.iterdir() if p.is_file())

    result = verify_units([units, apps], own_units + app_units)

    assert complaints(result.stderr, units) == []
    assert result.returncode == (1 if result.stderr else 0)


def test_verify_catches_an_ordering_cycle(tmp_path: Path):
    """The check above is live: an empty-volume service with default dependencies makes a cycle."""
    units = tmp_path / "generator"
    shutil.copytree(CASES / "empty-volume-mode-uid-gid" / "expected", units, symlinks=True)
    service = units / "kvmpod-empty-volume-shared.service"
    service.write_text(service.read_text().replace("DefaultDependencies=no\n", ""))
    apps = tmp_path / "apps"
    apps.mkdir()

    result = verify_units([units, apps], [write_app_service(apps, "a")])

    assert "ordering cycle" in result.stderr
