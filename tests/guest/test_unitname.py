"""kvmpod.guest.unitname / kvmpod.guest.siphash checked against the real systemd.

The systemd binaries are a hard requirement: without them these tests would
prove nothing, so a missing binary is a FAILURE, not a skip.
"""

import ctypes
import glob
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmpod.guest.siphash import siphash24
from kvmpod.guest.unitname import escape_path, mount_unit_name, unit_name_from_path

INSTALL_HINT = "install the `systemd` package (apt-get install systemd)"


def _binary(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin")
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return path


# ---------------------------------------------------------------- siphash

# SipHash-2-4 reference vectors (paper / reference vectors.h): key 00..0f,
# message i = bytes 00..i-1, output as the 8 little-endian bytes.
SIPHASH_VECTORS = """
310e0edd47db6f72 fd67dc93c539f874 5a4fa9d909806c0d 2d7efbd796666785
b7877127e09427cf 8da699cd64557618 cee3fe586e46c9cb 37d1018bf50002ab
6224939a79f5f593 b0e4a90bdf82009e f3b9dd94c5bb5d7a a7ad6b22462fb3f4
fbe50e86bc8f1e75 903d84c02756ea14 eef27a8e90ca23f7 e545be4961ca29a1
db9bc2577fcc2a3f 9447be2cf5e99a69 9cd38d96f0b3c14b bd6179a71dc96dbb
98eea21af25cd6be c7673b2eb0cbf2d0 883ea3e395675393 c8ce5ccd8c030ca8
94af49f6c650adb8 eab8858ade92e1bc f315bb5bb835d817 adcf6b0763612e2f
a5c91da7acaa4dde 716595876650a2a6 28ef495c53a387ad 42c341d8fa92d832
ce7cf2722f512771 e37859f94623f3a7 381205bb1ab0e012 ae97a10fd434e015
b4a31508beff4d31 81396229f0907902 4d0cf49ee5d4dcca 5c73336a76d8bf9a
d0a704536ba93e0e 925958fcd6420cad a915c29bc8067318 952b79f3bc0aa6d4
f21df2e41d4535f9 87577519048f53a9 10a56cf5dfcd9adb eb75095ccd986cd0
51a9cb9ecba312e6 96afadfc2ce666c7 72fe52975a4364ee 5a1645b276d592a1
b274cb8ebf87870a 6f9bb4203de7b381 eaecb2a30b22a87f 9924a43cc1315724
bd838d3aafbf8db7 0b1a2a3265d51aea 135079a3231ce660 932b2846e4d70666
e1915f5cb1eca46c f325965ca16d629f 575ff28e60381be5 724506eb4c328a95
""".split()


@pytest.mark.parametrize("n", range(64))
def test_siphash_reference_vectors(n: int) -> None:
    got = siphash24(bytes(range(n)), bytes(range(16)))
    assert got.to_bytes(8, "little").hex() == SIPHASH_VECTORS[n]


def test_siphash_paper_appendix_example() -> None:
    # SipHash paper, Appendix A: 15-byte message 00..0e -> a129ca6149be45e5.
    assert siphash24(bytes(range(15)), bytes(range(16))) == 0xA129CA6149BE45E5


def test_siphash_rejects_bad_key() -> None:
    with pytest.raises(ValueError):
        siphash24(b"x", bytes(15))


# ---------------------------------------------------------- escape_path

@pytest.mark.parametrize("bad", [
    "", "a/b", "a", "./a", "/a/", "//a", "/a//b", "/a/b/", "/./a", "/a/.", "/a/./b",
    "/..", "/a/..", "/a/../b", "/a\0b", "/a\nb", "/a\udcffb",
    "/" + "a" * 256,                       # component > NAME_MAX
    "/" + "é" * 128,                       # 256 bytes in UTF-8
    ("/" + "a" * 254) * 16 + "/" + "b" * 15,  # exactly 4096 bytes >= PATH_MAX
])
def test_escape_path_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        escape_path(bad)


def test_escape_path_examples() -> None:
    assert escape_path("/") == "-"
    assert escape_path("/.a/.b") == "\\x2ea-.b"   # only the very first dot is escaped
    assert escape_path("/a-b\\c") == "a\\x2db\\x5cc"
    assert escape_path("/é") == "\\xc3\\xa9"
    assert mount_unit_name("/") == "-.mount"
    assert mount_unit_name("/var/lib/pods") == "var-lib-pods.mount"


@pytest.mark.parametrize("suffix", ["", "mount", ".mnt", ".Mount", ".mount.x"])
def test_unit_name_from_path_rejects_bad_suffix(suffix: str) -> None:
    with pytest.raises(ValueError):
        unit_name_from_path("/a", suffix)


# ---------------------------------------- parity with systemd-escape --path

# Characters that stress the escaper: specials, whitespace, multi-byte UTF-8.
_ALPHABET = (
    "abcXYZ019" "-\\.:_% \t@+~=,'\"#!*?[]()$&;<>|{}`^"
    "\x01\x7f" "é日ß🙂\u00a0\u200b"
)


def _component(rng: random.Random, max_bytes: int) -> str:
    while True:
        n = rng.choice([1, 1, 2, 3, 5, 8, 13, 40, 120, 255])
        c = "".join(rng.choice(_ALPHABET) for _ in range(n))
        if rng.random() < 0.2:
            c = "." + c                       # leading dots in components
        while len(c.encode()) > max_bytes:
            c = c[:-1]
        if c not in ("", ".", ".."):
            return c


def _random_path(rng: random.Random) -> str:
    parts: list[str] = []
    total = 0
    for _ in range(rng.choice([1, 1, 2, 3, 4, 6, 10, 30])):
        c = _component(rng, 255)
        if total + 1 + len(c.encode()) >= 4096:
            break
        parts.append(c)
        total += 1 + len(c.encode())
    return "/" + "/".join(parts)


def _generated_paths(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["/"] + [_random_path(rng) for _ in range(count)]


def _systemd_escape(binary: str, paths: list[str]) -> list[str]:
    # systemd-escape takes many args and prints the results separated by
    # whitespace; escaped output never contains whitespace, so split() is exact.
    res = subprocess.run([binary, "--path", "--", *paths], capture_output=True, check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out = res.stdout.decode("ascii").split()
    assert len(out) == len(paths)
    return out


def test_escape_path_matches_systemd_escape() -> None:
    binary = _binary("systemd-escape")
    paths = _generated_paths(3000, seed=0x6B766D)
    assert any(len(escape_path(p)) + 6 >= 256 for p in paths)  # long names are covered too
    for i in range(0, len(paths), 300):
        batch = paths[i:i + 300]
        expected = _systemd_escape(binary, batch)
        for path, want in zip(batch, expected):
            assert escape_path(path) == want, repr(path)


@pytest.mark.parametrize("bad", ["/" + "a" * 256, "/" + "é" * 128, "/a/..", "/../a"])
def test_systemd_escape_rejects_what_we_reject(bad: str) -> None:
    # Our extra strictness must at least include everything systemd refuses.
    binary = _binary("systemd-escape")
    assert subprocess.run([binary, "--path", bad], capture_output=True).returncode != 0
    with pytest.raises(ValueError):
        escape_path(bad)


# ------------------------------- long names: systemd-analyze verify as oracle

MOUNT_BODY = "[Mount]\nWhat=/dev/null\nWhere={where}\nType=none\nOptions=bind\n"


def _path_with_escaped_len(target: int) -> str:
    # Multi-byte chars and "-" so the 232-char truncation can cut through a
    # \xNN escape; pad the last component with "a" to hit the exact length.
    # No ":" here: `systemd-analyze verify` parses FILE:ALIAS and would split
    # the file name at it (":" is covered by the other parity tests).
    head, tail = "/pods/é-x.y/_z/", "é-é-é-"   # tail escapes to 36 chars
    pad = target - len(escape_path(head + tail))
    path = head + "a" * pad + tail
    assert len(escape_path(path)) == target
    return path


LONG_CASES = [_path_with_escaped_len(n) for n in range(249, 261)] + [
    "/" + "/".join(f"é{i:03d}-" + "b" * 200 for i in range(15)),  # ~3.3 KiB escaped
]
# The hashed name keeps 232 chars of the escaped name; make sure that cut
# really lands inside a \xNN sequence for the boundary cases.
assert all(escape_path(p)[228:236].count("\\") for p in LONG_CASES[1:12])


def _verify(tmp_path: Path, name: str, where: str) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / name
    unit.write_text(MOUNT_BODY.format(where=where))
    try:
        return subprocess.run(
            [_binary("systemd-analyze"), "verify", "--man=no", str(unit)],
            capture_output=True, text=True, check=False,
        )
    finally:
        unit.unlink()


@pytest.mark.parametrize("where", LONG_CASES, ids=lambda p: f"esc{len(escape_path(p))}")
def test_long_names_accepted_by_systemd(tmp_path: Path, where: str) -> None:
    name = mount_unit_name(where)
    hashed = len(escape_path(where)) + len(".mount") >= 256
    assert len(name) == 255 if hashed else name == escape_path(where) + ".mount"
    res = _verify(tmp_path, name, where)
    assert (res.returncode, res.stderr) == (0, "")


def test_wrong_name_rejected_by_systemd(tmp_path: Path) -> None:
    # Negative control: proves verify really checks Where= against the name.
    where = _path_with_escaped_len(255)
    name = mount_unit_name(where)
    flipped = "0" if name[-7] != "0" else "1"   # last hex digit of the hash
    bad = name[:-7] + flipped + name[-6:]
    assert bad != name and bad.endswith(".mount")
    res = _verify(tmp_path, bad, where)
    assert res.returncode != 0
    assert "Where= setting doesn't match unit name" in res.stderr
    # ...while the correct name passes in the very same setup.
    assert _verify(tmp_path, name, where).returncode == 0


# ------------------- bulk parity with systemd's own unit_name_from_path()

def _libsystemd_shared() -> ctypes.CDLL:
    libs = sorted(glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so")
                  + glob.glob("/usr/lib/systemd/libsystemd-shared-*.so")
                  + glob.glob("/lib/systemd/libsystemd-shared-*.so"))
    if not libs:
        pytest.fail(f"libsystemd-shared not found: {INSTALL_HINT}")
    return ctypes.CDLL(libs[0])


def test_unit_name_from_path_matches_libsystemd_shared() -> None:
    # systemd-escape never hashes, so for many long names we call the very C
    # function PID 1 uses: int unit_name_from_path(const char*, const char*, char**).
    lib = _libsystemd_shared()
    fn = lib.unit_name_from_path
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    fn.restype = ctypes.c_int
    libc = ctypes.CDLL(None)
    hashed = 0
    # Pure-Python siphash over multi-KiB names is the slow part, so vary the
    # suffix (it changes truncation length and hash input) on a subset only.
    cases = [(p, ".mount") for p in _generated_paths(700, seed=251)]
    cases += [(p, s) for p in LONG_CASES for s in (".mount", ".automount", ".swap")]
    cases += [(p, s) for p in _generated_paths(60, seed=9) for s in (".automount", ".swap")]
    for path, suffix in cases:
        out = ctypes.c_void_p()
        assert fn(path.encode(), suffix.encode(), ctypes.byref(out)) == 0, repr(path)
        want = ctypes.string_at(out.value).decode("ascii")
        libc.free(out)
        assert unit_name_from_path(path, suffix) == want, repr(path)
        hashed += len(want) == 255 and want[-len(suffix) - 17] == "_"
    assert hashed > 150
