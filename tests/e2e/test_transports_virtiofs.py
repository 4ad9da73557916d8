"""Boot TV: host volumes over virtio-fs (`kvmpod args --share virtiofs`, issue 12), checked as boot A
checks 9p: writes reach the host, a read-only volume stays read-only (even after root remounts it
read-write in the guest), and an app whose volume the host does not export does not start.

The launched command is kvmpod's: kvmpod.host.hypervisor.supervisor starts one virtiofsd per volume, then QEMU
with vhost-user-fs-pci devices; the guest learns `kvmpod.share=virtiofs` from its command line and
kvmpod-generator writes Type=virtiofs units. Writable volumes over virtio-fs need
--unsafe-volume-writes (virtiofsd applies the guest's owners and modes to host files; issue 13).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from . import boot, guestimage
from .conftest import BootState, module_boot
from .kvmpod_guest import (HarnessError, argv_value, finish_unit, host_kvmpod, install_guest_script,
                           install_guest_unit, install_kvmpod, kept_dir, make_app_rootfs, pod_uuid, qemu_args,
                           write_json)

pytestmark = pytest.mark.e2e

TIMEOUT = 900.0  # boots took 220-250 s on a loaded 2-core machine, one ran over 420 s
APPS = {
    "writer": ('echo "written over virtio-fs" > /out/hello.txt; echo > /results/writer.done', [("out", "/out")]),
    "roprobe": ('cat /ro/existing.txt > /results/roprobe.read 2>&1; '
                'if ( echo x > /ro/try ) 2> /results/roprobe.err; then echo WROTE > /results/roprobe.txt; '
                'else cat /results/roprobe.err > /results/roprobe.txt; fi; echo > /results/roprobe.done',
                [("rovol", "/ro")]),
    "orphan": ("echo ran > /results/orphan.txt", [("missing", "/m")]),
}
HOST_VOLUMES = {"results": False, "out": False, "rovol": True, "missing": False}

FINISH_SCRIPT = r"""#!/bin/sh
r=/mnt/results
log() { echo "kvmpod-e2e-finish: $*" > /dev/kmsg; }
i=0
while { [ ! -e $r/writer.done ] || [ ! -e $r/roprobe.done ]; } && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
log "apps done after ${i}s"
grep virtiofs /proc/mounts > $r/mounts.txt
if mount -o remount,rw /mnt/rovol; then echo remount=ok; else echo remount=failed; fi > $r/remount.txt
if echo x > /mnt/rovol/try-root 2>> $r/remount.txt; then echo write=ok; else echo write=failed; fi >> $r/remount.txt
mkdir -p /run/again
if mount -t virtiofs rovol /run/again; then echo mount=ok; else echo mount=failed; fi >> $r/remount.txt
if echo x > /run/again/try2 2>> $r/remount.txt; then echo write2=ok; else echo write2=failed; fi >> $r/remount.txt
systemctl show orphan.service -p ActiveState -p SubState -p Result > $r/orphan.show
sync
log done
"""

FINISH_UNIT = finish_unit('collect results',
                          'mnt-results.mount mnt-out.mount mnt-rovol.mount',
                          300,
                          requires='mnt-results.mount mnt-out.mount mnt-rovol.mount')


def drop_virtiofs_export(argv: list[str], tag: str) -> list[str]:
    """The launched command without the virtiofsd and the QEMU device of volume `tag`."""
    devices = [i for i, a in enumerate(argv) if a.startswith("vhost-user-fs-pci,") and a.endswith(f",tag={tag}")]
    if len(devices) != 1:
        raise HarnessError(f"no single vhost-user-fs-pci device for tag {tag!r} in {argv}")
    i = devices[0]
    chardev = argv[i].split("chardev=", 1)[1].split(",", 1)[0]
    chardev_arg = argv[i - 2]
    if argv[i - 3] != "-chardev" or not chardev_arg.startswith(f"socket,id={chardev},path="):
        raise HarnessError(f"no -chardev {chardev} before the device of tag {tag!r}")
    socket = chardev_arg.split(",path=", 1)[1]
    out = argv[: i - 3] + argv[i + 1:]
    j = next(k for k, a in enumerate(out) if a == "--virtiofsd" and out[k + 2] == socket)
    return out[:j] + out[j + 4:]


@dataclass
class BootTV(BootState):
    LABEL: ClassVar[str] = "TV"
    vols: dict[str, Path] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def output_dir(self) -> Path | None:
        return self.vols.get("results")


def _run_boot(state: BootTV, tmp: Path) -> Iterator[None]:
    image = guestimage.ensure_image()
    for name in HOST_VOLUMES:
        state.vols[name] = state.logs / "volumes" / name
        state.vols[name].mkdir(parents=True)
    (state.vols["rovol"] / "existing.txt").write_text("ro content\n")
    apps = [{"name": name, "image": {"name": f"example.com/kvmpod-e2e-{name}"},
             "app": {"exec": ["/bin/busybox", "sh", "-c", script], "user": "0", "group": "0"},
             "mounts": [{"volume": "results", "path": "/results"}] + [{"volume": v, "path": p} for v, p in mounts]}
            for name, (script, mounts) in APPS.items()]
    volumes = [{"name": n, "kind": "host", "source": str(state.vols[n]), "readOnly": ro} for n, ro in HOST_VOLUMES.items()]
    pod_file = write_json(state.logs / "pod.json", {"acKind": "PodManifest", "acVersion": "0.8.11",
                                                    "apps": apps, "volumes": volumes})
    uuid = pod_uuid()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with boot.private_root(image, tmp) as root:
        state.install = install_kvmpod(root, state.logs)
        for name in APPS:
            make_app_rootfs(root, name)
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-finish", FINISH_SCRIPT)
        install_guest_unit(root, "kvmpod-e2e-finish.service", FINISH_UNIT)
        common = ["--manifest", str(pod_file), "--rootfs", str(root), "--uuid", uuid]
        host_kvmpod("stage", *common)
        console = state.logs / "console.log"
        out = qemu_args(common, image, console, "--share", "virtiofs", "--unsafe-volume-writes")
        (state.logs / "kvmpod-args.json").write_text(out.stdout)
        state.argv = drop_virtiofs_export(json.loads(out.stdout), "missing")
        state.accelerator = argv_value(state.argv, "-accel")
        state.seconds = boot.run_until_poweroff(state.argv, root, state.logs, console, state.accelerator,
                                                timeout=TIMEOUT)
        yield


@pytest.fixture(scope="module")
def boot_tv(request: pytest.FixtureRequest):
    yield from module_boot(request, BootTV(logs=kept_dir("boot-tv")), _run_boot)


def test_volumes_are_virtiofs_mounts_in_the_guest(boot_tv: BootTV) -> None:
    boot_tv.require()
    mounts = {line.split()[1]: line.split() for line in boot_tv.read("mounts.txt").splitlines()}
    assert {"/mnt/results", "/mnt/out", "/mnt/rovol"} <= set(mounts), boot_tv.where()
    assert "/mnt/missing" not in mounts
    assert mounts["/mnt/out"][0] == "out" and mounts["/mnt/out"][2] == "virtiofs"


def test_writes_reach_the_host(boot_tv: BootTV) -> None:
    boot_tv.require()
    assert (boot_tv.vols["out"] / "hello.txt").read_text() == "written over virtio-fs\n", boot_tv.where()


def test_read_only_stays_read_only_even_after_roots_remount(boot_tv: BootTV) -> None:
    boot_tv.require()
    assert boot_tv.read("roprobe.read") == "ro content\n"
    assert boot_tv.read("roprobe.txt").strip() == "sh: can't create /ro/try: Read-only file system", boot_tv.where()
    remount = boot_tv.read("remount.txt")
    assert "write=failed" in remount and "write2=failed" in remount, remount
    assert sorted(p.name for p in boot_tv.vols["rovol"].iterdir()) == ["existing.txt"]


def test_app_whose_volume_is_not_exported_does_not_start(boot_tv: BootTV) -> None:
    boot_tv.require()
    assert not (boot_tv.vols["results"] / "orphan.txt").exists(), boot_tv.where()
    show = dict(line.split("=", 1) for line in boot_tv.read("orphan.show").splitlines() if "=" in line)
    assert show["ActiveState"] == "inactive" and show["Result"] == "success", show
    journal = (boot_tv.logs / "journal.txt").read_text()
    assert "orphan.service: Job orphan.service/start failed with result 'dependency'." in journal
