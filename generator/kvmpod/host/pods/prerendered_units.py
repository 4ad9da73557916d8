"""Units rendered on the host, so that a pod's boot does not start Python to render them.

systemd runs every generator before it starts any unit, so kvmpod-generator's whole run is part of
every boot, and on a small pod Python's start alone costs more than systemd-fstab-generator's whole
run (issue 12). For the pods kvmpod boots itself (`--pod-dir`: `kvmpod run`), the host renders the
units instead: it runs the generator's own code (kvmpod.guest.generator.generate) on the pod's
root, read as the guest will see it and with the kernel command line the guest will get, and leaves
the result in the guest root as one tar archive named by its SHA-256:

    /var/lib/kvmpod/units/<sha256>.tar        the generator's output directory, as it would write it
    /var/lib/kvmpod/units/<sha256>.warnings   its warnings, one a line (the guest logs them again)
    /var/lib/kvmpod/units/<sha256>.dirs       its directories, one a line (checked: none is a symlink)

and puts `kvmpod.units=<sha256>` on the kernel command line. At boot the generator's launcher, a
POSIX shell script (packaging/launchers/kvmpod-generator), finds that word and that archive and
unpacks it with tar into systemd's generator directory: a shell and tar, a few milliseconds. Where
anything is missing or fails it runs the Python generator, which renders the units itself, as it
does for every guest booted without `--pod-dir`.

Why this is safe:
- The archive is named by its own hash and written whole under a temporary name, then renamed: an
  archive that exists is complete, and the name on the command line says which one this boot wants.
- The host renders from the pod's current files with the exact kernel command line each time it
  builds the argv (`kvmpod args --pod-dir` as well as `kvmpod run`): a pod whose files changed gets
  another hash, finds no archive of that name, and renders at boot. Only an old argv reused after
  the pod's files changed would boot old units, as it would boot old `kvmpod.share=` settings.
- A pod the generator would refuse is refused here, before boot, with the generator's own problems
  (InvalidInput: the field and the fix), so an archive only ever holds a valid pod's units.
- tar unpacks with `-k`: a file already in the generator directory is an error, as the Python
  generator's O_EXCL is. tar -k follows a symlink where a directory of the archive would go, so the
  launcher first checks that none of the `.dirs` is one (the Python generator's O_NOFOLLOW). The archive's last member is a mark (COMPLETE_MARK) the launcher checks for,
  as tar takes an archive cut at a block boundary for a whole one. On either failure the launcher
  runs the Python generator, which finds the files tar did unpack and refuses every app (fail
  closed), so no app starts with half of its units.
- The host's kvmpod renders for the guest's: `kvmpod run` boots the stage1 built from this checkout.
"""

import hashlib
import io
import os
import tarfile

from ...guest.generator import plan_boot
from ...guest.kernel_cmdline import kvmpod_settings
from ...guest.unitfile import GeneratedFile, Output, UnsafeValue
from ...pod.guest_paths import DEFAULT_MANIFEST, PRERENDERED_UNITS_DIR
from ...pod.problems import InvalidInput, Problem

CMDLINE_KEY = "kvmpod.units"  # the launcher reads exactly this word
FILE_MODE, DIR_MODE = 0o644, 0o755  # as the generator writes them (its umask is 022)
# The archive's last member. GNU tar unpacks an archive cut at a 512-byte block without an error, so
# the launcher checks that this file arrived; a dot file, which systemd skips in a unit directory.
COMPLETE_MARK = ".kvmpod-prerendered"
COMPLETE_TEXT = b"the units of this directory were rendered on the host and unpacked by kvmpod-generator\n"


class _Warnings:
    """The generator's log, kept: its warnings go to the user, and to the guest's log at boot."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def error(self, message: str) -> None:  # plan_boot raises its problems; it logs no error itself
        self.warnings.append(message)

    def debug(self, message: str) -> None:
        pass


class RenderedUnits:
    def __init__(self, archive: bytes, warnings: list[str], directories: list[str]):
        self.archive = archive
        self.warnings = warnings
        self.directories = directories  # the archive's directories, which must not be symlinks at boot
        self.sha256 = hashlib.sha256(archive).hexdigest()

    @property
    def cmdline_word(self) -> str:
        return f"{CMDLINE_KEY}={self.sha256}"


def render_units(root: str, cmdline: str) -> RenderedUnits | None:
    """The generator's output for the guest tree at `root` booted with `cmdline`, as an archive;
    None when the tree holds no pod manifest (the generator would write nothing). A pod the
    generator would refuse raises InvalidInput with its problems."""
    settings = kvmpod_settings(cmdline)
    manifest = settings.get("manifest") or DEFAULT_MANIFEST
    log = _Warnings()
    try:
        outputs = plan_boot(root.rstrip("/"), manifest, settings, "kvmpod.manifest", log)  # type: ignore[arg-type]
    except UnsafeValue as error:
        raise InvalidInput([Problem(manifest, str(error))]) from None
    if outputs is None:
        return None
    return RenderedUnits(archive_of(outputs), log.warnings, directories_of(outputs))


def archive_of(outputs: list[Output]) -> bytes:
    """A tar archive of the output directory, the same bytes for the same outputs: sorted, each
    directory before what it holds, owned by root, dated 0 (tar unpacks it with --touch), and
    COMPLETE_MARK last. Every member is named inside the directory (no "/" first, no ".."): the
    launcher unpacks with tar -P."""
    for output in outputs:  # the launcher unpacks with tar -P, which takes member names as they are
        if {"", ".", ".."} & set(output.path.split("/")):  # "" also for a "/" first or last, or "//"
            raise ValueError(f"{output.path!r} is not a path inside the generator's directory")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        made: set[str] = set()
        for output in sorted(outputs, key=lambda o: o.path):
            for directory in _parents(output.path):
                if directory not in made:
                    made.add(directory)
                    tar.addfile(_member(directory, tarfile.DIRTYPE, DIR_MODE))
            if isinstance(output, GeneratedFile):
                data = output.content.encode("utf-8")
                member = _member(output.path, tarfile.REGTYPE, FILE_MODE)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                member = _member(output.path, tarfile.SYMTYPE, 0o777)
                member.linkname = output.target
                tar.addfile(member)
        member = _member(COMPLETE_MARK, tarfile.REGTYPE, FILE_MODE)
        member.size = len(COMPLETE_TEXT)
        tar.addfile(member, io.BytesIO(COMPLETE_TEXT))
    return buffer.getvalue()


def directories_of(outputs: list[Output]) -> list[str]:
    """Every directory the outputs are in, parents first."""
    return list(dict.fromkeys(d for output in sorted(outputs, key=lambda o: o.path) for d in _parents(output.path)))


def _parents(path: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def _member(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.mtime = kind, mode, 0
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def store_units(root: str, units: RenderedUnits) -> str:
    """Write the archive (and its warnings) into the guest tree at `root`; the archive's host path.
    Each file is written under a temporary name and renamed, the archive last."""
    directory = os.path.join(root, PRERENDERED_UNITS_DIR.lstrip("/"))
    for check in (True, False):  # before making it and after
        if os.path.realpath(directory) != os.path.join(os.path.realpath(root), PRERENDERED_UNITS_DIR.lstrip("/")):
            # A symlink on the way would lead the host's writes out of the root (and the guest, which
            # resolves it in its own tree, would not find the archive).
            raise InvalidInput([Problem("--rootfs", f"{directory} leads out of the root through a symlink; "
                                                    "make it a plain directory")])
        if check:
            os.makedirs(directory, mode=0o755, exist_ok=True)
    base = os.path.join(directory, units.sha256)
    for path, data in ((base + ".warnings", "".join(f"{w}\n" for w in units.warnings).encode("utf-8")),
                       (base + ".dirs", "".join(f"{d}\n" for d in units.directories).encode("utf-8")),
                       (base + ".tar", units.archive)):
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
    return base + ".tar"
