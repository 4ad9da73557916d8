"""Issue 22: the pod share is capped. For real (root, no guest): the supervisor mounts a size- and
inode-capped tmpfs over <pod>/share in its private namespace; a "hypervisor" that behaves as root in
a hostile guest would (it writes through the share as QEMU's 9p server does for the guest) cannot
put more than the cap there, nothing of it reaches the host's disk, and only the apps' records (regular
files, at most 4 KiB) are copied to the host when it exits. A killed supervisor leaves no mount."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmpod.host.hypervisor.argv import HostSettings, build_argv
from kvmpod.host.hypervisor.pod_devices import POD_SHARE_BYTES
from kvmpod.host.hypervisor.resources import Resources
from kvmpod.host.hypervisor.supervisor import POD_SHARE_INODES
from kvmpod.host.pods.pod_dirs import PodDir, read_exit_records

REPO = Path(__file__).resolve().parents[3]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
RECORD = ("Result=success\nExecMainStartTimestampMonotonic=1\nExecMainExitTimestampMonotonic=2\nExecMainCode=1\n"
          "ExecMainStatus=0\n")
CAP = 1024 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and tmpfs mounts need root")


def supervised(share: Path, script: str, cap: int = CAP) -> list[str]:
    return [sys.executable, "-m", "kvmpod.host.hypervisor.supervisor", "--pod-share", str(share), str(cap),
            "--", "sh", "-c", script]


def mounted_on_host(path: Path) -> bool:
    return any(line.split(" ")[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_a_guest_cannot_put_more_than_the_cap_into_the_share_and_only_records_reach_the_host(tmp_path: Path):
    share, out = tmp_path / "pod/share", tmp_path / "out"
    (share / "apps").mkdir(parents=True)
    out.mkdir()
    # What root in the guest can do to /run/kvmpod/pod, done to the share as QEMU's 9p server does it.
    script = f"""
S={share}
dd if=/dev/zero of=$S/flood bs=64k count=1024 2>/dev/null; echo $? > {out}/dd.rc
stat -c %s $S/flood > {out}/flood.size
rm -f $S/flood
printf '{RECORD}' > $S/apps/.web.tmp && mv $S/apps/.web.tmp $S/apps/web
head -c 8192 /dev/zero > $S/apps/big
ln -s /etc/passwd $S/apps/link
mkfifo $S/apps/fifo
mknod $S/apps/dev c 1 5
printf '{RECORD}' > $S/apps/.db.tmp
i=0; while [ $i -lt 5000 ] && touch $S/e$i 2>/dev/null; do i=$((i+1)); done; echo $i > {out}/entries
exit 3
"""
    result = subprocess.run(supervised(share, script), env=ENV, capture_output=True, text=True, timeout=120)

    assert result.returncode == 3, result.stderr  # the hypervisor's status, passed on
    assert (out / "dd.rc").read_text().strip() != "0"  # No space left on device
    assert int((out / "flood.size").read_text()) <= CAP
    assert int((out / "entries").read_text()) < POD_SHARE_INODES  # millions of entries: no
    assert sorted(os.listdir(share)) == ["apps", "refused.json"]  # the flood and the entries stayed in the tmpfs
    assert sorted(os.listdir(share / "apps")) == ["web"]  # only a regular record of at most 4 KiB
    assert (share / "apps/web").read_text() == RECORD
    assert not mounted_on_host(share)
    # What was not copied is said, once on stderr and for kvmpod in share/refused.json.
    refused = json.loads((share / "refused.json").read_text())
    assert refused == {"big": "is larger than 4096 bytes", "dev": "is a character device, not a regular file",
                       "fifo": "is a FIFO, not a regular file", "link": "is a symbolic link, not a regular file"}, refused
    [line] = [ln for ln in result.stderr.splitlines() if "not copied out of the pod share" in ln]
    assert "apps/'link' is a symbolic link" in line
    # kvmpod says it of the pod's apps (never of names that are not apps of the pod).
    exits, problems = read_exit_records(PodDir(str(share.parent)), ["web", "link", "fifo", "other"])
    assert exits["web"] is not None and exits["link"] is None
    assert problems == {"link": "its record is a symbolic link, not a regular file (not copied out of the pod share)",
                        "fifo": "its record is a FIFO, not a regular file (not copied out of the pod share)"}


def test_a_killed_supervisor_leaves_no_mount_and_no_process(tmp_path: Path):
    share, out = tmp_path / "pod/share", tmp_path / "out"
    (share / "apps").mkdir(parents=True)
    out.mkdir()
    proc = subprocess.Popen(supervised(share, f"echo $$ > {out}/pid; exec sleep 600"), env=ENV)
    deadline = time.monotonic() + 30
    while not (out / "pid").exists() or not (out / "pid").read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child = int((out / "pid").read_text())
    assert str(share) in Path(f"/proc/{proc.pid}/mountinfo").read_text()  # in its namespace only
    assert not mounted_on_host(share)

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}")  # the hypervisor died with it (PR_SET_PDEATHSIG)
    assert not mounted_on_host(share) and os.listdir(share / "apps") == []


def test_every_pod_of_kvmpod_run_gets_the_capped_share(tmp_path: Path):
    from helpers import UUID, pod

    rootfs = tmp_path / "pod/stage1/rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "vmlinuz").write_text("")
    for hypervisor in ("qemu", "lkvm"):
        settings = HostSettings(hypervisor=hypervisor, pod_uuid=UUID, rootfs=str(rootfs),
                                kernel=str(rootfs / "vmlinuz"), initrd=None, pod_dir=str(tmp_path / "pod"),
                                accel="tcg" if hypervisor == "qemu" else "kvm")
        argv = build_argv(pod([], []), (), (), settings, Resources(1, 512))
        assert argv[1:3] == ["-m", "kvmpod.host.hypervisor.supervisor"]
        i = argv.index("--pod-share")
        assert argv[i + 1:i + 3] == [str(tmp_path / "pod/share"), str(POD_SHARE_BYTES)]


def test_a_virtiofsd_killed_while_the_vm_runs_stops_the_vm_with_one_line(tmp_path: Path):
    """Issue 22: a volume's virtiofsd dies (killed, crashed) under a running VM: the supervisor stops the
    VM (its volume is gone) and says so in one line; kvmpod run then reports the VM's end."""
    source, sock, out = tmp_path / "vol", tmp_path / "vol.sock", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    daemon = tmp_path / "virtiofsd"
    daemon.write_text(f"#!/bin/sh\necho $$ > {out}/daemon.pid\ntouch {sock}\nexec sleep 600\n")
    daemon.chmod(0o755)
    argv = [sys.executable, "-m", "kvmpod.host.hypervisor.supervisor", "--virtiofsd", str(daemon), str(sock),
            str(source), "--", "sh", "-c", f"echo $$ > {out}/vm.pid; exec sleep 600"]
    proc = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ((out / "vm.pid").exists() and (out / "vm.pid").read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)

    os.kill(int((out / "daemon.pid").read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == 128 + signal.SIGTERM
    assert err == (f"kvmpod-supervisor: virtiofsd for {sock} exited -9 while the VM ran: stopping the VM "
                   "(its volume is gone)\n")
    assert not os.path.exists(f"/proc/{int((out / 'vm.pid').read_text())}")


def test_on_a_full_disk_the_records_still_reach_the_host_through_the_reserved_room(tmp_path: Path):
    """The state directory's file system filled up while the pod ran: the supervisor frees the room
    kvmpod run kept in the share (pods/reserved_room.py) and copies the records into it."""
    share, out = tmp_path / "fs/pod/share", tmp_path / "out"
    out.mkdir()
    (tmp_path / "fs").mkdir()
    body = f"""
mount -t tmpfs -o size=1m kvmpod-test {tmp_path}/fs && mkdir -p {share}/apps || exit 9
{sys.executable} -c 'from kvmpod.host.pods import reserved_room; reserved_room.reserve("{share}", 8192)'
dd if=/dev/zero of={tmp_path}/fs/filler bs=4k 2>/dev/null
{shlex.join(supervised(share, f"printf '{RECORD}' > {share}/apps/web; exit 0"))}
echo "supervisor=$?" > {out}/rc
ls -A {share} > {out}/share; cat {share}/apps/web > {out}/web
"""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", body], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert (out / "rc").exists() and (out / "rc").read_text() == "supervisor=0\n", (result.stdout, result.stderr)
    assert (out / "share").read_text().split() == ["apps"]  # the reserve is gone: used for the record
    assert (out / "web").read_text() == RECORD, result.stderr
