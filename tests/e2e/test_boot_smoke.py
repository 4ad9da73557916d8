"""The boot harness's hard timeout: a guest that never powers off is killed and reported.

(The earlier smoke boot, a hand-written generator and one 9p share, is covered by the kvmpod
boots in test_pod_valid.py and test_pod_invalid.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import boot, guestimage

pytestmark = pytest.mark.e2e


def test_boot_timeout_kills_qemu_and_shows_console(tmp_path: Path) -> None:
    # Nothing in this guest powers it off, so the hard timeout must end it.
    image = guestimage.ensure_image()
    with boot.private_root(image, tmp_path / "root") as root:
        with pytest.raises(boot.BootError) as excinfo:
            boot.boot(image, root, [], tmp_path, timeout=10)
    message = str(excinfo.value)
    assert "did not power off within 10 s (QEMU killed)" in message
    assert "Linux version" in (tmp_path / "console.log").read_text()
    assert "last lines:\n[" in message  # the console tail travels in the error
