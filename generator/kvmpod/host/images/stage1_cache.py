"""The stage1 cache's integrity and upkeep (issue 22): a pod never boots a half-built or damaged
stage1, and old entries can be listed and collected.

An entry (`<cache>/<hash>/` for a base, `<cache>/stage1-<hash>/` for a stage1) is complete when its
build wrote, last before renaming the temp dir into place:
- `contents.json`, what was built: the size, mtime and SHA-256 of `vmlinuz` and `initrd.img`, and of
  the root a listing hash (names and types of its first two levels) plus the size and mtime of a few
  files every boot needs (SENTINELS);
- `build-info.json`, the completion mark (the builder writes it after everything else).

`problem(entry)` checks it cheaply on every use (stats and one listing, no hashing: ~1 ms): an entry
without its mark, without contents.json, with a file removed, truncated or rewritten (size or mtime
changed) is damaged, and `ensure_*` moves it aside (`.damaged-<name>-<pid>`, removed by `kvmpod
stage1 gc` once no pod uses it) and builds it again. A build killed at any step leaves only its
`.tmp-*` directory, which the next build (under the cache's lock) removes.

`kvmpod stage1 list` shows each entry; `kvmpod stage1 gc` removes every entry but the newest stage1
(and the base it was built on), those a running pod uses (recorded in the pod's state.json as
`stage1`), and those used more recently than --older-than (each use touches the entry's `last-used`),
so one user's gc does not pull an entry from under another's pod being prepared.
"""

import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

CONTENTS = "contents.json"
MARK = "build-info.json"
LAST_USED = "last-used"
BOOT_FILES = ("vmlinuz", "initrd.img")
# Files every stage1 boot needs, inside root/ (a base lacks the kvmpod ones: checked when present at build).
SENTINELS = ("usr/lib/systemd/systemd", "usr/bin/python3", "etc/os-release", "usr/lib/os-release",
             "usr/lib/systemd/system-generators/kvmpod-generator", "usr/bin/kvmpod")


def _listing(root: Path) -> str:
    """Names and types of root's first two levels, hashed."""
    h = hashlib.sha256()
    for top in sorted(os.scandir(root), key=lambda e: e.name):
        h.update(f"{top.name}\0{'d' if top.is_dir(follow_symlinks=False) else 'f'}\n".encode(errors="surrogateescape"))
        if top.is_dir(follow_symlinks=False):
            for sub in sorted(os.listdir(top.path)):
                h.update(f"{top.name}/{sub}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


def _stat(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_contents(tmp_entry: Path) -> None:
    """Record what was built (before the completion mark and the rename)."""
    root = tmp_entry / "root"
    contents = {
        "boot": {name: _stat(tmp_entry / name) + [_sha256(tmp_entry / name)] for name in BOOT_FILES},
        "listing": _listing(root),
        "sentinels": {s: _stat(root / s) for s in SENTINELS if os.path.lexists(root / s)},
    }
    (tmp_entry / CONTENTS).write_text(json.dumps(contents, indent=1) + "\n")


def problem(entry: Path) -> str | None:
    """Why `entry` must not be booted; None when it is complete and as built."""
    if not (entry / MARK).is_file():
        return "its build never finished (no build-info.json)"
    try:
        contents = json.loads((entry / CONTENTS).read_text())
    except FileNotFoundError:
        return "it has no record of what was built (contents.json); built by an older kvmpod"
    except (OSError, ValueError) as error:
        return f"its contents.json is unreadable ({error})"
    try:
        for name, (size, mtime, _digest) in contents["boot"].items():
            path = entry / name
            if not path.is_file():
                return f"{name} is missing"
            if _stat(path) != [size, mtime]:
                return f"{name} changed since it was built (size {path.stat().st_size}, built {size})"
        root = entry / "root"
        if not root.is_dir():
            return "root/ is missing"
        for sentinel, recorded in contents["sentinels"].items():
            if not os.path.lexists(root / sentinel):
                return f"root/{sentinel} is missing"
            if _stat(root / sentinel) != recorded:
                return f"root/{sentinel} changed since it was built"
        if _listing(root) != contents["listing"]:
            return "root/ lost or gained top-level entries since it was built"
    except (KeyError, TypeError, ValueError) as error:
        return f"its contents.json is not kvmpod's ({error})"
    return None


def usable(entry: Path, say=None) -> bool:
    """Whether `entry` may be booted; call with the cache's lock held. A damaged entry is set aside
    (said through `say`) so it is built again; one built before contents.json existed (mark present,
    no contents.json) gets its record now, as it is (trust on first use: a rebuild of every entry
    would cost every user a debootstrap)."""
    if not entry.exists():
        return False
    why = problem(entry)
    if why is not None and (entry / MARK).is_file() and not (entry / CONTENTS).exists():
        write_contents(entry)
        why = problem(entry)
    if why is None:
        mark_used(entry)
        return True
    aside = set_aside(entry)
    if say is not None:
        say(f"kvmpod stage1: {entry} is damaged: {why}; moved to {aside.name} (kvmpod stage1 gc removes it) "
            "and built again")
    return False


def set_aside(entry: Path) -> Path:
    """Move a damaged entry out of the way (atomically: no one gets it again); gc removes it later."""
    aside = entry.with_name(f".damaged-{entry.name}-{os.getpid()}")
    os.rename(entry, aside)
    return aside


def mark_used(entry: Path) -> None:
    try:
        (entry / LAST_USED).touch()
    except OSError:
        pass  # a read-only cache still boots


# ---------------------------------------------------------------- list and gc

@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # base, stage1, damaged, unfinished
    problem: str | None
    built: float | None  # the completion mark's mtime
    last_used: float | None
    base: str | None  # a stage1's base entry name

    @property
    def name(self) -> str:
        return self.path.name


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def entries(cache: Path) -> list[Entry]:
    found = []
    try:
        children = sorted(cache.iterdir())
    except FileNotFoundError:
        return []
    for path in children:
        if not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith(".tmp-"):
            kind = "unfinished"
        elif path.name.startswith(".damaged-"):
            kind = "damaged"
        elif path.name.startswith("stage1-"):
            kind = "stage1"
        elif len(path.name) == 16 and all(c in "0123456789abcdef" for c in path.name):
            kind = "base"
        else:
            continue  # not kvmpod's stage1 cache (another user of the directory)
        why = problem(path) if kind in ("base", "stage1") else None
        base = None
        if kind == "stage1":
            try:
                base = json.loads((path / MARK).read_text()).get("base")
            except (OSError, ValueError, AttributeError):
                pass
        found.append(Entry(path, kind, why, _mtime(path / MARK), _mtime(path / LAST_USED) or _mtime(path / MARK),
                           base))
    return found


def in_use(cache: Path, pods: list[tuple[bool, dict]]) -> set[str]:
    """Entry names used by running pods: `pods` is (running, state.json) for each pod."""
    used = set()
    for running, state in pods:
        where = state.get("stage1")
        if running and isinstance(where, str):
            rel = os.path.relpath(where, cache)
            if not rel.startswith(".."):
                used.add(rel.split(os.sep)[0])
    return used


def plan_gc(found: list[Entry], used: set[str], older_than: float, now: float | None = None) -> list[Entry]:
    """The entries gc removes (see the module's docstring)."""
    now = time.time() if now is None else now
    stage1s = sorted((e for e in found if e.kind == "stage1" and e.problem is None), key=lambda e: e.built or 0)
    keep = set(used)
    if stage1s:
        keep.add(stage1s[-1].name)
    keep |= {e.base for e in found if e.name in keep and e.base}
    bases = sorted((e for e in found if e.kind == "base" and e.problem is None), key=lambda e: e.built or 0)
    if bases:
        keep.add(bases[-1].name)
    remove = []
    for e in found:
        if e.name in keep:
            continue
        if e.kind == "damaged" and e.name.removeprefix(".damaged-").rsplit("-", 1)[0] in used:
            continue  # set aside while a pod still boots from it
        recent = e.last_used is not None and now - e.last_used < older_than
        if e.kind in ("base", "stage1") and recent:
            continue
        if e.kind == "unfinished" and e.last_used is None and now - (_mtime(e.path) or now) < older_than:
            continue  # a build may be under way (gc takes the lock, builds hold it: see gc())
        remove.append(e)
    return remove


def remove_entry(path: Path) -> None:
    """Remove a cache entry without ever descending into a mount (a build killed with /proc mounted)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    if any(m == str(path) or m.startswith(str(path) + "/") for m in mounts):
        raise OSError(16, f"{path} has a mount inside; unmount it first")
    # Make read-only directories writable first: a root tree may have them.
    for top, dirs, _files in os.walk(path):
        for d in dirs:
            p = os.path.join(top, d)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o200:
                os.chmod(p, st.st_mode | 0o200)
    shutil.rmtree(path)
