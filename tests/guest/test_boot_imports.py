"""kvmpod-generator's boot path stays light: what a whole run imports, checked in a fresh interpreter.

Not a timing test: it fails when a module that costs every boot milliseconds comes back
(README, Development: "The generator's cost at boot"). Timings are the benchmark's job.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "generator"
EXAMPLE_ROOT = SOURCE / "kvmpod/examples/appc-pod/root"
NICS_ROOT = REPO / "tests/guest/generator_cases/networks-two-nics/root"

# Each costs a generator milliseconds at every boot: dataclasses imports inspect (ast, dis, tokenize),
# typing and enum are heavy to import, argparse is heavy and pointless for four options.
NEVER = {"dataclasses", "typing", "inspect", "enum", "argparse", "ast", "pystemd"}
# What json_reader and the hand-written parts spare every pod; json.decoder brings re and enum.
NOT_FOR_A_POD_WITHOUT_NICS = {"json", "re", "collections", "functools", "ipaddress", "hashlib"}

RUN = """
import sys
sys.path.insert(0, {source!r})
{extra}
from kvmpod.guest.generator import main
status = main(["--root", {root!r}, {out!r}])
print(status)
print(" ".join(sorted(sys.modules)))
"""


def modules_of_a_run(root: Path, out: Path, extra: str = "") -> set[str]:
    """Every module loaded by one generator run on `root`, as the package runs it (python3 -I -S)."""
    code = RUN.format(source=str(SOURCE), root=str(root), out=str(out), extra=extra)
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    status, modules = proc.stdout.splitlines()
    assert status == "0", proc.stderr
    assert any(out.iterdir()), "the run wrote nothing: the check would prove nothing"
    return set(modules.split())


def test_a_run_on_the_example_pod_imports_nothing_heavy(tmp_path):
    modules = modules_of_a_run(EXAMPLE_ROOT, tmp_path)
    assert "kvmpod.pod.manifest" in modules and "kvmpod.guest.mount_units" in modules
    assert modules & NEVER == set()
    assert modules & NOT_FOR_A_POD_WITHOUT_NICS == set()


def test_a_run_on_a_pod_with_nics_imports_nothing_heavy(tmp_path):
    modules = modules_of_a_run(NICS_ROOT, tmp_path)
    assert "kvmpod.guest.network" in modules and "ipaddress" in modules  # it did plan the NICs
    assert modules & NEVER == set()


@pytest.mark.parametrize("heavy", ["dataclasses", "json"])
def test_the_check_sees_a_heavy_import(tmp_path, heavy):
    """Negative control: the same check, with one heavy import added, sees it."""
    modules = modules_of_a_run(EXAMPLE_ROOT, tmp_path, extra=f"import {heavy}")
    assert heavy in modules & (NEVER | NOT_FOR_A_POD_WITHOUT_NICS)
