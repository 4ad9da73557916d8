"""Issue 22: the state directory setting, rkt's --dir: `kvmpod --dir DIR`, else $KVMPOD_DIR, else
/var/lib/kvmpod; pods under <state>/pods unless $KVMPOD_PODS_DIR says otherwise (kept working), and
an explicit --dir wins over both KVMPOD_PODS_DIR and KVMPOD_IMAGES_DIR."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmpod.host.pods import pod_dirs

REPO = Path(__file__).resolve().parents[3]


def test_where_pods_go(monkeypatch):
    for name in ("KVMPOD_DIR", "KVMPOD_PODS_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert pod_dirs.pods_dir() == "/var/lib/kvmpod/pods"
    monkeypatch.setenv("KVMPOD_DIR", "/srv/kvmpod")
    assert pod_dirs.pods_dir() == "/srv/kvmpod/pods"
    monkeypatch.setenv("KVMPOD_PODS_DIR", "/elsewhere/pods")
    assert pod_dirs.pods_dir() == "/elsewhere/pods"


def test_dir_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KVMPOD_PODS_DIR", "/elsewhere/pods")
    monkeypatch.setenv("KVMPOD_IMAGES_DIR", "/elsewhere/images")
    assert pod_dirs.use_state_dir(str(tmp_path / "state")) == str(tmp_path / "state")
    assert pod_dirs.pods_dir() == str(tmp_path / "state/pods")
    assert "KVMPOD_IMAGES_DIR" not in os.environ and os.environ["KVMPOD_DIR"] == str(tmp_path / "state")


def test_kvmpod_list_and_gc_use_dir(tmp_path):
    state = tmp_path / "state"
    pod = state / "pods/6f1c2d6e-4b53-4d39-9a8e-0d1c5a7b3e21"
    pod.mkdir(parents=True)
    (pod / "state.json").write_text('{"state": "exited", "finished": 1, "apps": ["web"], "exit_status": 0}')
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"), KVMPOD_PODS_DIR=str(tmp_path / "not-these"))

    def kvmpod(*args):
        return subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "--dir", str(state), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert pod.name in kvmpod("list").stdout
    assert kvmpod("gc").stdout == f"removed {pod.name}\n"
    assert not pod.exists()


@pytest.mark.parametrize("value,words", [("", "give a directory path"), ("/etc/passwd", "is not a directory")])
def test_a_bad_dir_is_refused_naming_it(value, words):
    env = dict(os.environ, PYTHONPATH=str(REPO / "generator"))
    result = subprocess.run([sys.executable, "-m", "kvmpod.host.cli", "--dir", value, "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("kvmpod: --dir: ") and words in result.stderr
