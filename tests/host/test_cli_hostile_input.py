"""Issue 11 on the host: every input problem of `kvmpod stage`/`explain`/`args` is one line on stderr,
exit 2, nothing on stdout, never a traceback (a real process, real files)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "generator"))
UUID = "6f1c2d6e-4b53-4d39-9a8e-0d1c5a7b3e21"


def manifest(**changes) -> dict:
    app = {"exec": ["/bin/web"], "user": "0", "group": "0"}
    app.update(changes.pop("app", {}))
    document = {"acKind": "PodManifest", "acVersion": "0.8.11",
                "apps": [{"name": "web", "app": app, "mounts": [{"volume": "data", "path": "/data"}]}],
                "volumes": [{"name": "data", "kind": "host", "source": "/srv/data"}]}
    document.update(changes)
    return document


CASES = {
    "unhashable-volume-name": (manifest(volumes=[{"name": []}]), "volumes[0].name: must be a string, not an array"),
    "lone-surrogate": (manifest(app={"environment": [{"name": "X", "value": "\ud800"}]}),
                       "apps[0].app.environment[0].value: contains a lone UTF-16 surrogate"),
    "deep-nesting": ("[" * 100000, "is nested more than 100 levels deep"),
    "huge-number": ('{"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [], "volumes": [{"name": "e", '
                    '"kind": "empty", "uid": ' + "9" * 5000 + "}]}", "is not valid JSON"),
    "uid-out-of-range": (manifest(app={"user": "4294967295"}), "apps[0].app.user: 4294967295 is out of range"),
    "long-volume-name": (manifest(volumes=[{"name": "v" * 300, "kind": "host", "source": "/srv"}], apps=[]),
                         "volumes[0].name: is 300 characters long"),
}


@pytest.mark.parametrize("command", ["stage", "explain", "args"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_manifests_are_one_line_and_exit_2(tmp_path, command, case):
    document, message = CASES[case]
    pod = tmp_path / "pod.json"
    pod.write_text(document if isinstance(document, str) else json.dumps(document))
    rootfs = tmp_path / "stage1"
    (rootfs / "opt/stage2/web/rootfs").mkdir(parents=True)
    (rootfs / "vmlinuz").write_text("")
    argv = [command, "--manifest", str(pod), "--rootfs", str(rootfs)]
    if command != "stage":
        argv += ["--hypervisor", "qemu", "--accel", "tcg"] + (["--uuid", UUID] if command == "args" else [])

    result = subprocess.run([sys.executable, "-I", "-m", "kvmpod.host.cli", *argv], capture_output=True,
                            text=True, timeout=60, env=ENV)

    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert all(line.startswith("kvmpod: ") for line in result.stderr.splitlines()), result.stderr  # one per problem
    assert message in result.stderr
    assert not (rootfs / "etc").exists()  # stage wrote nothing
