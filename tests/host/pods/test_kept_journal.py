"""A kept pod's guest journal is persistent: /var/log/journal made in its root before it boots (issue 20)."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from kvmpod.host.pods import kept_journal


def _root(tmp_path: Path, group: str | None) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if group is not None:
        (root / "etc/group").write_text(group)
    return root


def test_the_group_is_read_from_the_stage1s_own_group_file(tmp_path: Path) -> None:
    root = _root(tmp_path, "root:x:0:\nadm:x:4:\nsystemd-journal:x:101:\nsystemd-journal-x:x:7:\n")
    assert kept_journal.group_id(str(root)) == 101
    assert kept_journal.group_id(str(root), "adm") == 4
    assert kept_journal.group_id(str(root), "nobody") is None
    assert kept_journal.group_id(str(_root(tmp_path / "none", None))) is None
    assert kept_journal.group_id(str(_root(tmp_path / "bad", "systemd-journal:x:abc:\nbroken\n"))) is None
    # "²" passes str.isdigit() but not int(): passed over for the good entry after it, not a ValueError
    assert kept_journal.group_id(str(_root(tmp_path / "digit", "systemd-journal:x:²:\nsystemd-journal:x:102:\n"))) == 102


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the directory the stage1's group needs root")
def test_the_directory_is_made_as_debians_systemd_makes_it(tmp_path: Path) -> None:
    root = _root(tmp_path, "root:x:0:\nsystemd-journal:x:101:\n")
    made = kept_journal.make_persistent(str(root))
    assert made == str(root / "var/log/journal")
    st = os.stat(made)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o2755
    assert (st.st_uid, st.st_gid) == (0, 101)
    assert kept_journal.make_persistent(str(root)) == made  # again (an existing directory): no error


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root needs root")
def test_without_the_group_the_directory_is_roots(tmp_path: Path) -> None:
    root = _root(tmp_path, None)
    st = os.stat(kept_journal.make_persistent(str(root)))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o2755)


def test_a_user_who_is_not_root_keeps_the_directory_as_their_own(tmp_path: Path, monkeypatch) -> None:
    root = _root(tmp_path, "systemd-journal:x:101:\n")
    chowned = []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "chown", lambda *a: chowned.append(a))
    made = kept_journal.make_persistent(str(root))
    assert os.path.isdir(made) and chowned == []
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o2755


def test_a_kept_pod_ends_with_the_orderly_shutdown_by_a_drop_in_systemd_reads(tmp_path: Path) -> None:
    """The pod-done target (guest/lifecycle.py) powers off at once; a kept pod's drop-in makes that the
    orderly poweroff. Read back by the real systemd-analyze from the root offline (--root cat-config): the
    target as the generator writes it and the drop-in from the root's /etc, the drop-in's setting last
    (it wins). That a booted kept pod ends so: e2e test_run.py, its journal has "Journal stopped"."""
    from kvmpod.guest import lifecycle

    root = _root(tmp_path, "systemd-journal:x:101:\n")
    [target] = [o for o in lifecycle.plan_lifecycle(["web"], "kvmpod_pod", "/etc/kvmpod/pod.json", None)
                if o.path == lifecycle.POD_DONE_UNIT]
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / target.path).write_text(target.content)
    if os.geteuid() != 0:
        pytest.skip("make_persistent chowns as root")
    kept_journal.make_persistent(str(root))
    shown = subprocess.run(["systemd-analyze", f"--root={root}", "cat-config", f"systemd/system/{lifecycle.POD_DONE_UNIT}"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    actions = [line for line in shown.stdout.splitlines() if line.startswith("SuccessAction=")]
    assert actions == ["SuccessAction=poweroff-immediate", "SuccessAction=poweroff"], shown.stdout
    assert f"/etc/systemd/system/{lifecycle.POD_DONE_UNIT}.d/{lifecycle.ORDERLY_END_DROPIN}" in shown.stdout
