"""exec[0] lookup (rkt's FindBinPath), ExecStart= quoting of the program, the env helper's checks,
and "root" without a user database: on real files, where modes and symlinks are the kernel's."""

import os
from pathlib import Path

import pytest

from kvmpod.guest.app_identity import lookup_id
from kvmpod.guest.app_services import exec_command
from kvmpod.guest.environment_helper import is_static_executable, systemd_accepts
from kvmpod.guest.exec_path import find_program


def executable(path: Path, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    executable(root / "usr/lib/server/real")
    (root / "opt/bin").mkdir(parents=True)
    (root / "opt/bin/server").symlink_to("../../usr/lib/server/real")
    executable(root / "first/server", 0o644)  # earlier on PATH, not executable: skipped
    executable(root / "bin/tool")
    executable(root / "srv/local")
    (root / "escape").mkdir()
    (root / "escape/server").symlink_to("/../../../../usr/lib/server/real")  # clamped at the rootfs
    return root


def test_bare_name_is_found_on_the_apps_path_through_symlinks_inside_the_root(rootfs: Path):
    assert find_program(str(rootfs), "server", "/srv", "/first:/opt/bin:/usr/bin") == "/opt/bin/server"
    assert find_program(str(rootfs), "server", "/srv", "/escape") == "/escape/server"


def test_without_path_the_working_directory_then_bin_and_usr_bin(rootfs: Path):
    assert find_program(str(rootfs), "local", "/srv", None) == "/srv/local"
    assert find_program(str(rootfs), "tool", "/srv", None) == "/bin/tool"
    assert find_program(str(rootfs), "server", "/srv", None) is None  # not on /srv, /bin, /usr/bin


def test_relative_path_entries_and_names_with_a_slash_use_the_working_directory(rootfs: Path):
    assert find_program(str(rootfs), "local", "/srv", "../srv") == "/srv/local"
    assert find_program(str(rootfs), "./run.sh", "/app", None) == "/app/run.sh"
    assert find_program(str(rootfs), "../x/y", "/app", None) == "/x/y"


def test_a_name_nothing_answers_is_none(rootfs: Path):
    assert find_program(str(rootfs), "nope", "/", "/bin:/usr/bin") is None
    assert find_program(str(rootfs), "server", "/", "/first") is None


def test_dollar_is_doubled_in_arguments_only():
    assert exec_command(["/bin/cost$5", "$HOME", "a b"]) == '"/bin/cost$5" "$$HOME" "a b"'


def test_root_is_zero_without_a_user_database(tmp_path: Path):
    assert lookup_id(str(tmp_path), "root", "passwd") == 0
    assert lookup_id(str(tmp_path), "root", "group") == 0
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:7:7::/:/bin/sh\n")
    assert lookup_id(str(tmp_path), "root", "passwd") == 7  # the image's own database wins
    assert lookup_id(str(tmp_path), "daemon", "passwd") is None


def test_names_are_read_from_the_apps_database_as_getent_reads_it(tmp_path: Path):
    """Comments and blank lines are no entries, a malformed line or an id systemd refuses is passed
    over, the first entry of a name wins (pod/user_database.py)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("#web:x:5:\n\nweb\nweb:x:65535:\nweb:x:²:\nweb:x:1001:\nweb:x:1002:\n"
                                        "db:x:4294967294:\n")
    assert lookup_id(str(tmp_path), "web", "group") == 1001
    assert lookup_id(str(tmp_path), "#web", "group") is None
    assert lookup_id(str(tmp_path), "db", "group") == 4294967294
    assert lookup_id(str(tmp_path), "1001", "group") == 1001  # a number is a number, looked up nowhere


@pytest.mark.parametrize("name,accepted", [("PATH", True), ("_x1", True), ("my.var", False), ("MY-VAR", False)])
def test_names_systemd_252_accepts(name, accepted):
    assert systemd_accepts(name) is accepted


def test_static_executable_check_on_real_binaries():
    if not Path("/bin/busybox").is_file():
        pytest.skip("busybox-static is not installed")
    assert is_static_executable("/bin/busybox")
    assert not is_static_executable(os.path.realpath("/bin/ls"))  # dynamically linked
    assert not is_static_executable("/etc/hostname")
    assert not is_static_executable("/nonexistent")


def test_static_executable_check_survives_malformed_headers(tmp_path: Path):
    import struct

    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    for phentsize, phnum in ((0, 5), (56, 1000), (2, 1)):
        elf = tmp_path / f"elf-{phentsize}-{phnum}"
        elf.write_bytes(header + struct.pack("<HHIQQQIHHHHHH", 2, 0x3e, 1, 0, 64, 0, 0, 64, phentsize, phnum, 0, 0, 0))
        assert not is_static_executable(str(elf))
