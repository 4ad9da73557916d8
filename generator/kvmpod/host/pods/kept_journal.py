"""A kept pod's guest journal is persistent (issue 20): `kvmpod run --keep` makes /var/log/journal in the
pod's root before the VM boots.

A pod's journal is volatile by default (the stage1 has no /var/log/journal: images/stage1_trim.py,
VOLATILE_JOURNAL): journald keeps it in the guest's RAM and nothing of it is written over 9p. A pod
kept for diagnosis gets the directory, so journald's Storage=auto stores it persistently there, the
stage1's systemd-journal-flush.service (which runs only when the directory exists) flushes the boot's
journal into it before the apps start, and after the pod's end it is on the host in the pod's own
upper dir: `journalctl -D <pod>/stage1/upper/var/log/journal` (tests/benchmarks/bench_run.py reads it
so). That flush is on the apps' path again: a kept pod starts slower, which the README says.

Made as Debian's systemd makes it (its postinst; tmpfiles.d/systemd.conf gives it this mode and group):
root, group systemd-journal when the stage1 has that group, mode 2755 (run by a user who is not root,
whose pod has a copy of the stage1 root: the user's own directory, mode 2755).

A kept pod also ends with the orderly shutdown (a drop-in for kvmpod-pod-done.target in its root's
/etc/systemd/system): a pod's end otherwise syncs and powers off at once (guest/lifecycle.py), which
would leave its journal's files open ("online") and without the shutdown's lines.
"""

import os

from ...guest.lifecycle import ORDERLY_END_DROPIN, POD_DONE_UNIT
from ...pod import user_database

JOURNAL_DIR = "var/log/journal"
MODE = 0o2755
GROUP = "systemd-journal"


def group_id(root: str, name: str = GROUP) -> int | None:
    """The gid of group `name` in root's /etc/group (the stage1's own), or None."""
    try:
        with open(os.path.join(root, "etc/group"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = None
    return user_database.group_id(text, name)


def make_persistent(root: str) -> str:
    """/var/log/journal in the pod's root (its overlay, or its copy): the path made."""
    path = os.path.join(root, JOURNAL_DIR)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:  # not root (a pod with a copied root): the directory stays the user's
        gid = group_id(root)
        os.chown(path, 0, gid if gid is not None else 0)
    os.chmod(path, MODE)  # after chown, which clears the setgid bit
    keep_orderly_end(root)
    return path


ORDERLY_END = """# kvmpod run --keep: the orderly shutdown, so the kept journal is whole and closed (host/pods/kept_journal.py)
[Unit]
SuccessAction=poweroff
"""


def keep_orderly_end(root: str) -> str:
    """The drop-in that turns the pod's end in root into the orderly shutdown: its path."""
    path = os.path.join(root, "etc/systemd/system", POD_DONE_UNIT + ".d", ORDERLY_END_DROPIN)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(ORDERLY_END)
    return path
