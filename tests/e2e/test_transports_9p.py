"""Boot T9: host volumes over QEMU's 9p as kvmpod exports them by default (issues 13 and 9).

One boot through the launched command `kvmpod args` prints (kvmpod.host.hypervisor.supervisor, then QEMU):
- issue 13: root in the guest makes a setuid-root copy of a shell, a setgid file, a character device
  and a FIFO in a writable host volume; on the host none is setuid, setgid, a device or a FIFO. A
  non-root app makes its own files there (a 0640 file, a setgid directory, a FIFO it talks through)
  and sees them with its own owner and modes.
- issue 9: root in the guest remounts the read-only volume read-write and still cannot write to the
  host; a submount under a `recursive: false` source is invisible in the guest, visible under the
  default rbind; nothing of the staging ever appears in the host's mount table.
The boot runs in a private mount namespace of the test's own (`unshare -m`), which holds the
submount, so the host is never touched.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from . import boot, guestimage
from .conftest import BootState, module_boot
from .kvmpod_guest import (argv_value, finish_unit, host_kvmpod, install_guest_script, install_guest_unit,
                           install_kvmpod, kept_dir, make_app_rootfs, pod_uuid, qemu_args, write_json)

pytestmark = pytest.mark.e2e

TIMEOUT = 900.0  # boots took 220-250 s on a loaded 2-core machine, one ran over 420 s
STAGING = "/run/kvmpod/staging"
EXTRA_APPLETS = ("mkfifo", "chmod", "ln")

OWNER_SCRIPT = r"""cd /rw
echo mine > own.txt; chmod 0640 own.txt
mkdir owndir; chmod 2750 owndir
mkfifo ownfifo; chmod 0620 ownfifo
( echo through-the-fifo > ownfifo & ); read line < ownfifo
{ echo "file=$(stat -c '%a %u %g %F' own.txt)"; echo "dir=$(stat -c '%a %u %g %F' owndir)"
  echo "fifo=$(stat -c '%a %u %g %F' ownfifo)"; echo "fifo_read=$line"; echo "content=$(cat own.txt)"; } > /results/owner.txt
echo > /results/owner.done
"""

FINISH_SCRIPT = r"""#!/bin/sh
# kvmpod e2e (boot T9): what root in the guest can do to host volumes, then power off.
r=/mnt/results
log() { echo "kvmpod-e2e-finish: $*" > /dev/kmsg; }
i=0
while [ ! -e $r/owner.done ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
log "owner done after ${i}s"
cd /mnt/rw
cp /bin/sh suid-sh; chown 0:0 suid-sh; chmod 4755 suid-sh
echo g > sgid.txt; chmod 2755 sgid.txt
mknod chr c 1 3; mkfifo fifo
stat -c '%n %a %u %g %F' suid-sh sgid.txt chr fifo > $r/root-guest-view.txt 2>&1
chown 1000:1000 sgid.txt; echo "chown=$?" > $r/root-chown.txt
grep " /mnt/rovol " /proc/mounts | cut -d' ' -f1-3 > $r/rovol-mount.txt
# Root's two ways to write a read-only volume: remount it rw, or mount its tag again without ro.
# (The subshell: a failed redirection is reported by the shell running the command, not into its 2>.)
if mount -o remount,rw /mnt/rovol; then echo remount=ok; else echo remount=failed; fi > $r/remount.txt
if ( echo x > /mnt/rovol/try ) 2>> $r/remount.txt; then echo write=ok; else echo write=failed; fi >> $r/remount.txt
mkdir -p /run/again
umount /mnt/rovol  # a virtio-9p channel takes one mount at a time
if mount -t 9p -o trans=virtio,version=9p2000.L,rw rovol /run/again; then echo mount=ok; else echo mount=failed; fi >> $r/remount.txt
if ( echo x > /run/again/try2 ) 2>> $r/remount.txt; then echo write2=ok; else echo write2=failed; fi >> $r/remount.txt
# rovol2: the host exports it without QEMU's readonly=on (the test took it out), as lkvm would:
# only kvmpod's read-only staged bind stands between root in the guest and the host directory.
if mount -o remount,rw /mnt/rovol2; then echo remount=ok; else echo remount=failed; fi > $r/remount2.txt
if ( echo x > /mnt/rovol2/try ) 2>> $r/remount2.txt; then echo write=ok; else echo write=failed; fi >> $r/remount2.txt
for v in rec norec; do
  if [ -e /mnt/$v/sub/marker ]; then echo "$v=visible"; else echo "$v=hidden"; fi
done > $r/submounts.txt
sync
log done
"""

FINISH_UNIT = finish_unit("root's tries on the host volumes",
                          'mnt-results.mount mnt-rw.mount mnt-rovol.mount mnt-rec.mount mnt-norec.mount',
                          300,
                          requires='mnt-results.mount mnt-rw.mount mnt-rovol.mount mnt-rovol2.mount mnt-rec.mount mnt-norec.mount')


@dataclass
class BootT9(BootState):
    LABEL: ClassVar[str] = "T9"
    vols: dict[str, Path] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    host_mounts_seen: list[str] = field(default_factory=list)

    def output_dir(self) -> Path | None:
        return self.vols.get("results")


def without_readonly_on(argv: list[str], fsdev_id: str) -> list[str]:
    """The argv with QEMU's readonly=on taken off one -fsdev (so the staged bind is the only wall)."""
    [i] = [i for i, a in enumerate(argv) if a.startswith(f"local,id={fsdev_id},") and a.endswith(",readonly=on")]
    return argv[:i] + [argv[i].removesuffix(",readonly=on")] + argv[i + 1:]


def _watch_host_mounts(seen: list[str], stop: threading.Event) -> None:
    """Samples the host's mount table (this test process's namespace) while the VM runs."""
    while not stop.is_set():
        seen += [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if STAGING in line]
        stop.wait(0.5)


def _run_boot(state: BootT9, tmp: Path) -> Iterator[None]:
    image = guestimage.ensure_image()
    vols = state.logs / "volumes"
    for name in ("results", "rw", "rovol", "rovol2", "subsrc"):
        (vols / name).mkdir(parents=True)
        state.vols[name] = vols / name
    for name in ("results", "rw"):
        state.vols[name].chmod(0o777)  # the owner app runs as uid 1000
    (state.vols["rovol"] / "existing.txt").write_text("ro content\n")
    (state.vols["rovol2"] / "existing.txt").write_text("ro content\n")
    (state.vols["subsrc"] / "sub").mkdir()

    apps = [{"name": "owner", "image": {"name": "example.com/kvmpod-e2e-owner"},
             "app": {"exec": ["/bin/busybox", "sh", "-c", OWNER_SCRIPT], "user": "1000", "group": "1000"},
             "mounts": [{"volume": "results", "path": "/results"}, {"volume": "rw", "path": "/rw"}]}]
    volumes = [{"name": n, "kind": "host", "source": str(state.vols[n])} for n in ("results", "rw")]
    volumes += [{"name": "rovol", "kind": "host", "source": str(state.vols["rovol"]), "readOnly": True},
                {"name": "rovol2", "kind": "host", "source": str(state.vols["rovol2"]), "readOnly": True},
                {"name": "rec", "kind": "host", "source": str(state.vols["subsrc"])},
                {"name": "norec", "kind": "host", "source": str(state.vols["subsrc"]), "recursive": False}]
    pod_file = write_json(state.logs / "pod.json", {"acKind": "PodManifest", "acVersion": "0.8.11",
                                                    "apps": apps, "volumes": volumes})
    uuid = pod_uuid()
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with boot.private_root(image, tmp) as root:
        state.install = install_kvmpod(root, state.logs)
        rootfs = make_app_rootfs(root, "owner")
        for applet in EXTRA_APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-finish", FINISH_SCRIPT)
        install_guest_unit(root, "kvmpod-e2e-finish.service", FINISH_UNIT)
        common = ["--manifest", str(pod_file), "--rootfs", str(root), "--uuid", uuid]
        host_kvmpod("stage", *common)
        console = state.logs / "console.log"
        out = qemu_args(common, image, console)
        state.argv = without_readonly_on(json.loads(out.stdout), "vol3")  # rovol2
        (state.logs / "kvmpod-args.json").write_text(out.stdout)
        state.accelerator = argv_value(state.argv, "-accel")
        # The submount lives in this boot's own mount namespace only.
        sub = state.vols["subsrc"] / "sub"
        wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-euc",
                   f'mount -t tmpfs kvmpod-e2e-sub "{sub}"; echo m > "{sub}/marker"; exec "$@"', "sh"]
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_host_mounts, args=(state.host_mounts_seen, stop))
        watcher.start()
        try:
            state.seconds = boot.run_until_poweroff(state.argv, root, state.logs, console, state.accelerator,
                                                    timeout=TIMEOUT, wrapper=wrapper)
        finally:
            stop.set()
            watcher.join()
        yield


@pytest.fixture(scope="module")
def boot_t9(request: pytest.FixtureRequest):
    yield from module_boot(request, BootT9(logs=kept_dir("boot-t9")), _run_boot)


def _read(state: BootT9, name: str) -> str:
    state.require()
    return state.read(name)


def test_the_launched_command_is_supervised_and_exports_staged_binds(boot_t9: BootT9) -> None:
    boot_t9.require()
    argv = boot_t9.argv
    assert argv[1:3] == ["-m", "kvmpod.host.hypervisor.supervisor"]
    assert ["--mount", "rbind,ro", str(boot_t9.vols["rovol"]), f"{STAGING}/vol2"] == argv[3:7]
    assert ["--mount", "rbind,ro", str(boot_t9.vols["rovol2"]), f"{STAGING}/vol3"] == argv[7:11]
    assert ["--mount", "bind", str(boot_t9.vols["subsrc"]), f"{STAGING}/vol5"] == argv[11:15]
    assert f"local,id=vol3,path={STAGING}/vol3,security_model=mapped-xattr,multidevs=remap" in argv  # readonly=on taken off
    assert f"local,id=vol2,path={STAGING}/vol2,security_model=mapped-xattr,multidevs=remap,readonly=on" in argv


def test_root_in_the_guest_plants_nothing_usable_on_the_host(boot_t9: BootT9) -> None:
    guest = _read(boot_t9, "root-guest-view.txt").splitlines()
    # The guest itself sees what it made (mapped-xattr keeps it in user.virtfs.* xattrs) ...
    assert guest == ["suid-sh 4755 0 0 regular file", "sgid.txt 2755 0 0 regular file",
                     "chr 644 0 0 character special file", "fifo 644 0 0 fifo"], boot_t9.where()
    # ... the host sees plain files only QEMU's user can read.
    for name in ("suid-sh", "sgid.txt", "chr", "fifo"):
        st = (boot_t9.vols["rw"] / name).lstat()
        assert stat.S_ISREG(st.st_mode), f"{name} is not a plain file on the host: {stat.filemode(st.st_mode)}"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), f"{name}: {stat.filemode(st.st_mode)}"
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{name}: {stat.filemode(st.st_mode)} is open to others"
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_non_root_app_sees_its_own_owner_and_modes(boot_t9: BootT9) -> None:
    lines = dict(line.split("=", 1) for line in _read(boot_t9, "owner.txt").splitlines())
    assert lines == {"file": "640 1000 1000 regular file", "dir": "2750 1000 1000 directory",
                     "fifo": "620 1000 1000 fifo", "fifo_read": "through-the-fifo", "content": "mine"}, boot_t9.where()
    assert (boot_t9.vols["rw"] / "own.txt").read_text() == "mine\n"  # its data reached the host
    # On the host: QEMU's, root-only, never setgid or a FIFO (the README's example).
    for name, kind in (("own.txt", stat.S_IFREG), ("owndir", stat.S_IFDIR), ("ownfifo", stat.S_IFREG)):
        st = (boot_t9.vols["rw"] / name).lstat()
        assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
            (kind, 0o700 if kind == stat.S_IFDIR else 0o600, 0, 0), (name, stat.filemode(st.st_mode))


def test_remounting_the_read_only_volume_rw_still_cannot_write_to_the_host(boot_t9: BootT9) -> None:
    assert _read(boot_t9, "rovol-mount.txt") == "rovol /mnt/rovol 9p\n", boot_t9.where()
    text = _read(boot_t9, "remount.txt")
    assert "write=failed" in text and "mount=ok" in text and "write2=failed" in text, (text, boot_t9.where())
    assert "Read-only file system" in text
    assert sorted(p.name for p in boot_t9.vols["rovol"].iterdir()) == ["existing.txt"]


def test_the_staged_read_only_bind_alone_keeps_root_from_writing(boot_t9: BootT9) -> None:
    """What protects lkvm, whose 9p has no readonly=on: here QEMU's was taken off rovol2."""
    text = _read(boot_t9, "remount2.txt")
    assert text.startswith("remount=ok\n") and "write=failed" in text and "Read-only file system" in text, text
    assert sorted(p.name for p in boot_t9.vols["rovol2"].iterdir()) == ["existing.txt"]
    assert (boot_t9.vols["rovol"] / "existing.txt").read_text() == "ro content\n"


def test_recursive_false_hides_a_host_submount_and_rbind_shows_it(boot_t9: BootT9) -> None:
    assert _read(boot_t9, "submounts.txt").splitlines() == ["rec=visible", "norec=hidden"], boot_t9.where()


def test_nothing_of_the_staging_reaches_the_host_mount_table(boot_t9: BootT9) -> None:
    boot_t9.require()
    assert boot_t9.host_mounts_seen == []
    assert [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if STAGING in line] == []
