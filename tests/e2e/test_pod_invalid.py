"""Boot B: an invalid pod manifest in the guest. The generator must mount nothing, log every problem
to the kernel log, and refuse every app staged in /opt/stage2, including one whose unit the guest
ships itself (`shipped.service`, wanted by multi-user.target, which would leave a marker).

The host helper refuses to stage an invalid manifest (checked here too), so the argv is built and
the tree staged from the same pod with the missing volume declared; then the guest's copy of the
manifest is replaced by the invalid one, as if it had been changed after staging.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import pytest

from . import boot, guestimage
from .conftest import BootState, module_boot
from .kvmpod_guest import (argv_value, finish_unit, host_kvmpod, install_guest_script, install_guest_unit,
                           install_kvmpod, kept_dir, make_app_rootfs, pod_uuid, qemu_args, write_json)

pytestmark = pytest.mark.e2e

TIMEOUT = 300.0
OUT = "var/lib/kvmpod-e2e"  # in the guest root, read from the host after the boot
FIELD = "apps[0].mounts[0].volume"

INVALID = {
    "acKind": "PodManifest",
    "acVersion": "0.8.11",
    "apps": [{
        "name": "shipped",
        "image": {"name": "example.com/kvmpod-e2e-shipped"},
        "app": {"exec": ["/bin/busybox", "sh", "-c", "echo app > /marker"], "user": "0", "group": "0"},
        "mounts": [{"volume": "nosuch", "path": "/data"}],
    }],
    "volumes": [],
}
STAGED_APPS = ("shipped", "other")  # `other` is staged in /opt/stage2 but not in the manifest

SHIPPED_UNIT = f"""[Unit]
Description=a unit the guest ships for app shipped

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo started > /{OUT}/shipped-marker'
"""
# The control: the same unit under a name that is no app of the pod, so nothing refuses it. Its marker
# shows that a unit of this shape does leave one in /{OUT} (which exists before any unit starts).
CONTROL_UNIT = SHIPPED_UNIT.replace("app shipped", "no app (control)").replace("shipped-marker", "control-marker")
SHOW = "-p ActiveState -p Result -p AssertResult -p AssertTimestampMonotonic -p ExecMainStartTimestampMonotonic"

FINISH_SCRIPT = f"""#!/bin/sh
# kvmpod e2e (boot B): record what became of shipped.service and what the generator wrote.
o=/{OUT}
mkdir -p $o
systemctl show shipped.service {SHOW} > $o/shipped.show
systemctl show control.service {SHOW} > $o/control.show
(cd /run/systemd/generator && find . -type f -o -type l | sort) > $o/generated.txt
cat /run/systemd/generator/shipped.service.d/50-kvmpod-invalid-manifest.conf > $o/dropin.conf 2>&1
sync
"""

FINISH_UNIT = finish_unit('record', 'shipped.service control.service', 120)


@dataclass
class BootB(BootState):
    LABEL: ClassVar[str] = "B"
    stage_refusal: str = ""
    out: Path | None = None

    def output_dir(self) -> Path | None:
        return self.out

    def console(self) -> str:
        return (self.logs / "console.log").read_text(errors="replace")


def _run_boot(state: BootB, tmp: Path) -> Iterator[None]:
    image = guestimage.ensure_image()
    invalid = write_json(state.logs / "invalid-pod.json", INVALID)
    valid = copy.deepcopy(INVALID)
    valid["volumes"] = [{"name": "nosuch", "kind": "empty"}]
    valid_file = write_json(state.logs / "staged-pod.json", valid)
    uuid = pod_uuid()

    tmp.parent.mkdir(parents=True, exist_ok=True)
    with boot.private_root(image, tmp) as root:
        state.install = install_kvmpod(root, state.logs)
        for name in STAGED_APPS:
            make_app_rootfs(root, name)
        install_guest_unit(root, "shipped.service", SHIPPED_UNIT)
        install_guest_unit(root, "control.service", CONTROL_UNIT)
        (root / OUT).mkdir(parents=True)  # before any unit may start: a marker could be written
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-finish", FINISH_SCRIPT)
        install_guest_unit(root, "kvmpod-e2e-finish.service", FINISH_UNIT)

        refused = host_kvmpod("stage", "--manifest", str(invalid), "--rootfs", str(root), check=False)
        state.stage_refusal = f"exit {refused.returncode}: {refused.stderr}"
        common = ["--manifest", str(valid_file), "--rootfs", str(root), "--uuid", uuid]
        host_kvmpod("stage", *common)
        (root / "etc/kvmpod/pod.json").write_bytes(invalid.read_bytes())
        console = state.logs / "console.log"
        out = qemu_args(common, image, console)
        argv = json.loads(out.stdout)
        state.accelerator = argv_value(argv, "-accel")
        print(f"kvmpod-e2e: boot B with accelerator {state.accelerator}")
        state.seconds = boot.run_until_poweroff(argv, root, state.logs, console, state.accelerator, timeout=TIMEOUT)
        state.out = root / OUT
        yield


@pytest.fixture(scope="module")
def boot_b(request: pytest.FixtureRequest):
    yield from module_boot(request, BootB(logs=kept_dir("boot-b")), _run_boot)


def test_host_helper_refuses_to_stage_the_invalid_manifest(boot_b: BootB) -> None:
    boot_b.require()
    assert boot_b.stage_refusal == (
        f"exit 2: kvmpod: {FIELD}: no volume named 'nosuch'; add it to volumes[] or give the mount an appVolume\n")


def _show(boot_b: BootB, unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in boot_b.read(f"{unit}.show").splitlines() if "=" in line)


def test_control_unit_of_the_same_shape_ran_and_left_its_marker(boot_b: BootB) -> None:
    """Without this, the refusal check below could pass for a unit that could never have written."""
    boot_b.require()
    assert boot_b.out is not None
    assert (boot_b.out / "control-marker").read_text() == "started\n", boot_b.where()
    show = _show(boot_b, "control")
    assert (show["AssertResult"], show["Result"]) == ("yes", "success"), show
    assert int(show["ExecMainStartTimestampMonotonic"]) > 0, show


def test_invalid_manifest_starts_no_app(boot_b: BootB) -> None:
    boot_b.require()
    assert boot_b.out is not None
    assert not (boot_b.out / "shipped-marker").exists(), f"shipped.service ran {boot_b.where()}"
    show = _show(boot_b, "shipped")
    # A start was requested and refused by the assertion: it was tested (a timestamp; a unit never
    # started has 0 and AssertResult=no too), failed, and no process was ever started.
    assert (show["ActiveState"], show["AssertResult"]) == ("inactive", "no"), show
    assert int(show["AssertTimestampMonotonic"]) > 0, f"the assertion was never tested: {show}"
    assert show["ExecMainStartTimestampMonotonic"] == "0", show
    journal = (boot_b.logs / "journal.txt").read_text()
    assert "shipped.service: Starting requested but asserts failed." in journal, boot_b.where()
    assert "Assertion failed for shipped.service - a unit the guest ships for app shipped." in journal, boot_b.where()
    assert "AssertPathExists=!/" in boot_b.read("dropin.conf").splitlines()


def test_generator_writes_only_refusals(boot_b: BootB) -> None:
    boot_b.require()
    kvmpod_files = [f for f in boot_b.read("generated.txt").splitlines()
                    if "kvmpod" in f or f.startswith(("./mnt-", "./opt-stage2")) or "shipped" in f or "other" in f]
    assert kvmpod_files == [f"./{app}.service.d/50-kvmpod-invalid-manifest.conf" for app in sorted(STAGED_APPS)]


def test_console_names_the_invalid_field(boot_b: BootB) -> None:
    boot_b.require()
    console = boot_b.console()
    lines = [ln for ln in console.splitlines() if "kvmpod-generator[" in ln]
    assert any(f"]: {FIELD}: no volume named 'nosuch'" in ln for ln in lines), (lines, boot_b.where())
    assert any("these apps are refused: other, shipped" in ln for ln in lines), (lines, boot_b.where())
