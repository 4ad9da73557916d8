"""Read unit settings back as the real systemd 252 parsed them, offline.

`systemd --test --system --unit=U` (run as an unprivileged user: it refuses root) loads U and its
dependencies from $SYSTEMD_UNIT_PATH, with systemd's own parser, and dumps every loaded unit
(unit_dump/exec_context_dump). From the dump this reads, per unit, each ExecStart= argv (before
systemd's `$VAR` expansion at run time), each Environment= assignment, WorkingDirectory= and more.
The dump quotes an argv like systemd's quote_command_line (shell-style, C escapes for control
characters); `decode_command_line` undoes that.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from systemd_tools import require_binary

SYSTEMD = "/lib/systemd/systemd"
NOBODY = "65534"


def dump_units(unit_dir: Path, units: list[str]) -> dict[str, dict[str, list]]:
    """{unit: {"ExecStart": [argv, …], "Environment": [assignment, …], key: [value, …]}} of each unit
    in `units` as systemd loaded it from `unit_dir` (searched first, then the host's units)."""
    require_binary("systemd-analyze")  # same package; the binary itself is not on PATH
    with tempfile.TemporaryDirectory(prefix="kvmpod-readback-") as copy:
        readable = Path(copy) / "units"  # systemd --test runs as nobody: it must be able to read them
        shutil.copytree(unit_dir, readable, symlinks=True)
        os.chmod(copy, 0o755)
        for p in [readable, *readable.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        return _dump(readable, units)


def _dump(unit_dir: Path, units: list[str]) -> dict[str, dict[str, list]]:
    found: dict[str, dict[str, list]] = {}
    for unit in units:
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEMD, "--test",
             "--system", "--no-pager", f"--unit={unit}"],
            env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_TARGET="console",
                     SYSTEMD_LOG_LEVEL="warning"),
            capture_output=True, timeout=120)
        found.update(parse_dump(result.stdout, {unit}))
    return found


def parse_dump(dump: bytes, wanted: set[str]) -> dict[str, dict[str, list]]:
    units: dict[str, dict[str, list]] = {}
    current: dict[str, list] | None = None
    for raw in dump.split(b"\n"):
        line = raw.lstrip(b"\t")  # a value may end in a tab
        if raw.startswith(b"-> Unit ") or raw.startswith(b"\t-> Unit "):
            name = line.removeprefix(b"-> Unit ").rstrip(b":").decode()
            current = units.setdefault(name, {}) if name in wanted else None
            continue
        if current is None:
            continue
        key, sep, value = line.partition(b": ")
        if not sep:
            continue
        key_text = key.decode(errors="replace")
        if key_text == "Command Line":
            current.setdefault("ExecStart", []).append(decode_command_line(value))
        elif key_text in ("Environment", "WorkingDirectory", "RootDirectory", "User", "Group", "Description",
                          "Where", "What", "Options", "Fragment Path"):
            current.setdefault(key_text, []).append(value.decode("utf-8", "surrogateescape"))
    return units


_C_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11}


def decode_command_line(text: bytes) -> list[str]:
    """Undo systemd's quote_command_line(): words split on spaces; a word in double quotes has `\\X`
    for X in `"\\`$`, C escapes (`\\n`, `\\NNN` octal) for control characters; other bytes as they are."""
    words: list[str] = []
    i = 0
    while i < len(text):
        if text[i:i + 1] == b" ":
            i += 1
            continue
        word = bytearray()
        if text[i:i + 1] == b'"':
            i += 1
            while text[i:i + 1] != b'"':
                c = text[i]
                if c == 0x5C:
                    n = text[i + 1]
                    if 0x30 <= n <= 0x37:
                        word.append(int(text[i + 1:i + 4], 8))
                        i += 4
                        continue
                    word.append(_C_ESCAPES.get(n, n))
                    i += 2
                    continue
                word.append(c)
                i += 1
            i += 1
        else:
            while i < len(text) and text[i:i + 1] != b" ":
                word.append(text[i])
                i += 1
        words.append(word.decode("utf-8", "surrogateescape"))
    return words
