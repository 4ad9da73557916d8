"""Run the real systemd tools the tests check against; fail, never skip, when they are missing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; install the Debian package 'systemd' "
                    "(the README's test command does)")
    return path


def verify_units(unit_dirs: list[Path], units: list[Path]) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` with `unit_dirs` searched first, as a generator's output dir is."""
    env = dict(os.environ, SYSTEMD_UNIT_PATH=":".join(str(d) for d in unit_dirs) + ":")
    return subprocess.run(
        [require_binary("systemd-analyze"), "verify", "--man=no", *map(str, units)],
        env=env, capture_output=True, text=True, timeout=120,
    )


def write_app_service(directory: Path, app: str) -> Path:
    """A stand-in for the app's own unit, so verify loads the whole graph the generator wired to it."""
    unit = directory / f"{app}.service"
    unit.write_text(f"[Unit]\nDescription=app {app}\n\n[Service]\nExecStart=/bin/true\n\n"
                    "[Install]\nWantedBy=multi-user.target\n")
    return unit
