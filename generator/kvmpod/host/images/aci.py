"""Unpack an app image (.aci: a tar, optionally gzip/bzip2/xz, holding `manifest` and `rootfs/`)
into a pod directory without ever writing outside it.

Python's tarfile gained `filter=` only in 3.11.4 (and later patch releases change its defaults), so
kvmpod does not rely on it: every member is checked here and written through directory file
descriptors opened with O_NOFOLLOW, one path component at a time, as rkt's extraction refused to
follow links out of the image:

- a name that is absolute, has a `..` component, or is neither `manifest` nor under `rootfs/`;
- a member written through a symlink the archive made earlier (O_NOFOLLOW: refused, not followed);
- a relative symlink whose target leaves the rootfs from where it stands (an absolute target is kept:
  in the app's chroot it means a path inside the app);
- a hard link to anything but a file this archive already wrote inside the rootfs;
- a device node unless kvmpod runs as root (only root can make one, and it is root's decision);
- a name given twice (a later member replacing an earlier one is how tar tricks are built).
"""

import os
import stat
import tarfile

from ...pod.problems import InvalidInput, Problem
from .safe_paths import DIR_FLAGS as _DIR_FLAGS, Refused, escapes, open_parent

_Refused = Refused
_open_parent = open_parent


def _member_path(name: str) -> list[str]:
    if name.startswith("/"):
        raise _Refused(f"{name!r} is an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused(f"{name!r} has a '..' component")
    if not parts or not (parts == ["manifest"] or parts[0] == "rootfs"):
        raise _Refused(f"{name!r} is neither manifest nor under rootfs/ (an ACI holds only those)")
    return parts


def _escapes(link_parts: list[str], target: str) -> bool:
    """A relative target that climbs above rootfs/ from the link's directory."""
    return escapes(link_parts[1:-1], target)


def extract_aci(archive: str, dest: str, field: str) -> None:
    """Unpack `archive` into the existing empty directory `dest` (dest/manifest, dest/rootfs/...).
    InvalidInput naming `field` and the member on the first refusal; the caller removes dest."""
    try:
        _extract(archive, dest)
    except _Refused as error:
        raise InvalidInput([Problem(field, f"{archive}: {error}; the image is refused")]) from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidInput([Problem(field, f"{archive} cannot be unpacked as an ACI (a tar with manifest "
                                           f"and rootfs/): {error}")]) from None


def _extract(archive: str, dest: str) -> None:
    is_root = os.geteuid() == 0
    seen: set[str] = set()
    files: set[str] = set()
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                parts = _member_path(member.name)
                key = "/".join(parts)
                if key in seen and not member.isdir():
                    raise _Refused(f"{key!r} appears twice in the archive")
                seen.add(key)
                if member.isdir():
                    _open_parent_and(root_fd, parts + ["."], lambda fd, _: None)
                    continue
                if parts == ["manifest"] and not member.isfile():
                    raise _Refused("'manifest' is not a regular file")
                _write_member(tar, member, root_fd, parts, key, files, is_root)
        if "manifest" not in seen:
            raise _Refused("it has no 'manifest'")
    finally:
        os.close(root_fd)


def _open_parent_and(root_fd: int, parts: list[str], action) -> None:
    fd = _open_parent(root_fd, parts, create=True)
    try:
        action(fd, parts[-1])
    finally:
        os.close(fd)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, parts: list[str], key: str,
                  files: set[str], is_root: bool) -> None:
    mode = member.mode & 0o7777

    def write(fd: int, name: str) -> None:
        if member.isfile():
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                source = tar.extractfile(member)
                assert source is not None
                while chunk := source.read(1 << 20):
                    f.write(chunk)
                if is_root:
                    os.fchown(f.fileno(), member.uid, member.gid)
                os.fchmod(f.fileno(), mode)
            files.add(key)
        elif member.issym():
            if _escapes(parts, member.linkname):
                raise _Refused(f"symlink {key!r} -> {member.linkname!r} points outside the image's rootfs")
            os.symlink(member.linkname, name, dir_fd=fd)
            if is_root:
                os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        elif member.islnk():
            target = _member_path(member.linkname)
            target_key = "/".join(target)
            if target_key not in files:
                raise _Refused(f"hard link {key!r} -> {member.linkname!r} does not name a file this image "
                               f"wrote before it")
            source_fd = _open_parent(root_fd, target, create=False)
            try:
                os.link(target[-1], name, src_dir_fd=source_fd, dst_dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(source_fd)
            files.add(key)
        elif member.ischr() or member.isblk() or member.isfifo():
            if not member.isfifo() and not is_root:
                raise _Refused(f"{key!r} is a device node, which only root may create; run kvmpod as root "
                               f"or remove it from the image")
            kind = stat.S_IFIFO if member.isfifo() else (stat.S_IFCHR if member.ischr() else stat.S_IFBLK)
            os.mknod(name, kind | mode, os.makedev(member.devmajor, member.devminor), dir_fd=fd)
        else:
            raise _Refused(f"{key!r} has a tar type kvmpod does not unpack ({member.type!r})")

    _open_parent_and(root_fd, parts, write)


def is_aci(path: str) -> bool:
    return path.endswith(".aci") and os.path.isfile(path)
