"""Fast checks of how the guest image finds its Debian mirror in the host's apt configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import guestimage

DEB822 = """Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def _apt(tmp_path: Path, sources: dict[str, str], legacy: str | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in sources.items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    if legacy is not None:
        (tmp_path / "sources.list").write_text(legacy)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guestimage.MIRROR_ENV, raising=False)


def test_deb822_stanza_with_the_codename(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"debian.sources": DEB822})
    assert guestimage.host_mirror(apt, "bookworm") == "http://mirror.invalid/debian"


def test_codename_must_match_a_whole_suite(tmp_path: Path) -> None:
    text = DEB822.replace("Suites: bookworm bookworm-updates", "Suites: bookworm-updates")
    apt = _apt(tmp_path, {"debian.sources": text}, "deb [arch=amd64 signed-by=/k.gpg] http://legacy.invalid/d bookworm main\n")
    assert guestimage.host_mirror(apt, "bookworm") == "http://legacy.invalid/d"


def test_disabled_stanza_and_other_files_ignored(tmp_path: Path) -> None:
    off = DEB822.replace("Types: deb\n# a comment", "Types: deb\nEnabled: no", 1)
    apt = _apt(tmp_path, {"a.sources": off, "b.list.disabled": "deb http://x.invalid/ bookworm main\n"},
               "# deb http://commented.invalid/ bookworm main\ndeb-src http://src.invalid/ bookworm main\n"
               "deb http://legacy.invalid/debian bookworm main\n")
    assert guestimage.host_mirror(apt, "bookworm") == "http://legacy.invalid/debian"


def test_environment_override_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guestimage.MIRROR_ENV, "http://override.invalid/debian")
    assert guestimage.host_mirror(_apt(tmp_path, {"debian.sources": DEB822}), "bookworm") == \
        "http://override.invalid/debian"


def test_no_mirror_names_the_files_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(guestimage.ImageBuildError, match="KVMPOD_E2E_MIRROR"):
        guestimage.host_mirror(_apt(tmp_path, {}), "bookworm")
