"""Paths resolved inside an app's rootfs: the symlink limit at its edge, checked against the kernel,
and absolute links below the top of the rootfs (where "absolute" and "relative" differ)."""

import errno
import os
from pathlib import Path

import pytest

from kvmpod.pod.inside_root import MAX_SYMLINKS, UnsafePath, readlink_on_disk, resolve_inside_root


def chain(root: Path, links: int) -> str:
    """`/l1 -> l2 -> … -> l<links> -> target/` in `root`: a path that passes through `links` symlinks."""
    (root / "target").mkdir()
    for i in range(1, links + 1):
        (root / f"l{i}").symlink_to(f"l{i + 1}" if i < links else "target")
    return "/l1/sub"


def kernel_follows(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        assert error.errno == errno.ELOOP, error
        return False
    return True


def test_forty_links_resolve_like_the_kernel(tmp_path: Path):
    path = chain(tmp_path, 40)

    assert resolve_inside_root(str(tmp_path), path, readlink_on_disk) == "/target/sub"
    assert kernel_follows(tmp_path / "l1"), "the kernel itself follows 40 links"


def test_forty_one_links_are_refused_like_the_kernel(tmp_path: Path):
    path = chain(tmp_path, 41)

    with pytest.raises(UnsafePath, match="more than 40 symlinks while resolving '/l1/sub'"):
        resolve_inside_root(str(tmp_path), path, readlink_on_disk)
    assert not kernel_follows(tmp_path / "l1"), "the kernel refuses 41 links (ELOOP)"


def test_the_limit_is_the_kernels():
    assert MAX_SYMLINKS == 40


def links(table: dict[str, str]):
    return lambda path: table.get(path.removeprefix("/root"))


@pytest.mark.parametrize("path, want", [
    ("/a/b/link/data", "/c/data"),          # absolute link two levels down: restarts at the rootfs
    ("/d/e/rel/x", "/g/h/x"),               # relative at depth, then an absolute one
    ("/d/e/rel/up/y", "/j/y"),              # … then a relative one from where the absolute one landed
    ("/k/l/m/z", "/n/z"),                   # absolute with `..` above the rootfs: clamped
    ("/p/q", "/c/deeper"),                  # absolute into another absolute link at depth
])
def test_absolute_links_below_the_top_restart_at_the_rootfs(path: str, want: str):
    table = {"/a/b/link": "/c", "/d/e/rel": "../../f/abs", "/f/abs": "/g/h", "/g/h/up": "../../j",
             "/k/l/m": "/../../n", "/p/q": "/a/b/link/deeper"}

    assert resolve_inside_root("/root", path, links(table)) == want


def strict_links(root: str, table: dict[str, str]):
    """readlink on exactly `root` + path: a doubled or missing slash finds nothing."""
    return lambda path: table.get(path[len(root):]) if path.startswith(root + "/") and "//" not in path else None


@pytest.mark.parametrize("root", ["/srv/app", "/srv/app/", "/srv/appX/"])
def test_the_disk_root_is_joined_with_one_slash(root: str):
    base = root.rstrip("/")
    assert resolve_inside_root(root, "/a/b/link/data", strict_links(base, {"/a/b/link": "/c"})) == "/c/data"


def test_dot_components_are_skipped_wherever_they_are():
    assert resolve_inside_root("/r", "/./a/./b/.", lambda _: None) == "/a/b"
    assert resolve_inside_root("/r", "./a/../../b", lambda _: None) == "/b"


def test_a_path_of_4095_bytes_resolves_and_4096_is_refused():
    """PATH_MAX (4096) counts the terminating NUL: 4095 bytes is the longest path the kernel takes."""
    longest = "/" + "a" * 4094
    assert resolve_inside_root("/r", longest, lambda _: None) == longest
    with pytest.raises(UnsafePath, match="resolves to a path longer than PATH_MAX \\(4096\\)"):
        resolve_inside_root("/r", longest + "a", lambda _: None)


@pytest.mark.parametrize("components, error", [
    (4096, "resolves to a path longer than PATH_MAX"),   # pending reaches 4096: still walked
    (4097, "through symlinks grows without bound"),      # more: refused before walking it
])
def test_a_link_target_that_grows_the_walk_beyond_path_max_is_refused(components: int, error: str):
    target = "/" + "/".join(["c"] * components)
    with pytest.raises(UnsafePath, match=error):
        resolve_inside_root("/r", "/big", lambda p: target if p == "/r/big" else None)
