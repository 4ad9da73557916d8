"""Apply an image's layers to a directory as the OCI image spec says (layer.md), never writing
outside it.

- Entries are applied in order; a name that exists is replaced (a directory over a directory is
  kept and takes the new owner and mode; anything else is removed first, a directory with all it
  holds: a file replaced by a directory and back, a symlink replaced by a file).
- `.wh.NAME` removes NAME of the lower layers; `.wh..wh..opq` empties its directory of what the
  lower layers put there. Neither hides what the same layer adds (layer.md, "Whiteouts").
- Hard links name a path of the image, in this layer or a lower one; they are made with
  link(2) without following a symlink, and only to something that is there and not a directory.
- Owners (as numbers: uname/gname are ignored, the image's /etc/passwd is not the host's), modes
  with setuid/setgid/sticky, times, and the security.capability xattr (ping's cap_net_raw) are
  kept when kvmpod runs as root; as another user files are the user's own.
- Refused: an absolute name, a `..` component, a name through a symlink or a file (every
  directory is opened O_NOFOLLOW from the root down), a hard link to a missing path or a directory,
  a tar type that is not a file, directory, link, FIFO or device, more than MAX_ENTRIES entries
  (bounded work and memory for a hostile image: the per-layer name set is the only thing kept).
- Symlinks are made as they are, also relative ones that climb above the root: kvmpod never follows
  a link in an image (everything it writes or reads goes through O_NOFOLLOW walks, or resolves
  links inside the image as its chroot would), and in the guest a link resolves inside the app's
  root, where `..` stops at `/` (real images have such links: refusing them would refuse images
  Docker and podman run).
- Device nodes (character and block) are skipped with a warning, even as root: the store is a
  host directory, and a node there (say, the host's disk, mode 0666) would be a way into the host
  for anyone who can reach it; an app gets its devices from the guest's own /dev, as a container
  gets them from its runtime, never from its image. FIFOs are made.
"""

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable

from .image_source import Image, ImageError, Layer
from .safe_paths import DIR_FLAGS, Refused, open_dir

MAX_ENTRIES = 2_000_000  # in all layers together; more is refused (Debian's largest images have ~100k)
MAX_NAME_BYTES = 4096  # PATH_MAX
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
LAYER_MEDIA_TYPES = {
    "", "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}


def _layer_parts(name: str) -> list[str]:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise Refused(f"{name[:80]!r}... is longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("/") and name.strip("/"):  # "/" alone is the root, as umoci insert writes it
        raise Refused(f"{name!r} is an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"{name!r} has a '..' component")
    return parts


class Applier:
    """Applies layers, bottom first, to the directory `root` (which must exist)."""

    def __init__(self, root: str, warn: Callable[[str], None], max_entries: int | None = None) -> None:
        self.root_fd = os.open(root, DIR_FLAGS)
        self.warn = warn
        self.max_entries = MAX_ENTRIES if max_entries is None else max_entries
        self.entries = 0
        self.is_root = os.geteuid() == 0
        self.dirs: dict[str, tarfile.TarInfo] = {}  # their owner, mode and time, set at the end
        self._cache: tuple[str, int] | None = None  # the last parent directory opened

    def close(self) -> None:
        self._forget()
        os.close(self.root_fd)

    def _forget(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _dir(self, parts: list[str], create: bool) -> int | None:
        """A borrowed fd of the directory parts (O_NOFOLLOW all the way); None when missing and not `create`."""
        key = "/".join(parts)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        fd = open_dir(self.root_fd, parts, create, missing_ok=True)
        if fd is None:
            return None
        self._forget()
        self._cache = (key, fd)
        return fd

    def apply(self, tar_stream, what: str) -> None:
        """Apply one uncompressed layer, read as a stream."""
        this_layer: set[str] = set()
        devices = 0
        with tarfile.open(fileobj=tar_stream, mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                self.entries += 1
                if self.entries > self.max_entries:
                    raise Refused(f"the image has more than {self.max_entries} entries; kvmpod stops there")
                parts = _layer_parts(member.name)
                if not parts:
                    if member.isdir():
                        self.dirs[""] = member
                    continue
                base = parts[-1]
                if any(p.startswith(WHITEOUT + WHITEOUT) and p != OPAQUE for p in parts):
                    continue  # AUFS's own (.wh..wh.plnk/, .wh..wh.aufs): reserved names, not the image's
                if base.startswith(WHITEOUT):
                    if base == OPAQUE:
                        self._opaque(parts[:-1], this_layer)
                    else:
                        self._whiteout(parts[:-1], base[len(WHITEOUT):], this_layer)
                    continue
                key = "/".join(parts)
                this_layer.add(key)
                if member.ischr() or member.isblk():
                    devices += 1
                    if devices <= 3:
                        self.warn(f"{what}: device node /{key} skipped (an app's devices come from the guest's /dev)")
                    continue
                self._write(tar, member, parts, key)
        if devices > 3:
            self.warn(f"{what}: {devices - 3} more device nodes skipped")

    def _remove(self, fd: int, name: str) -> None:
        """Remove `name` in the directory `fd`; the cached directory fd is closed afterwards (it may
        have been inside), so callers get theirs again."""
        st = os.lstat(name, dir_fd=fd)
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)  # fd-based, never follows a symlink (shutil's safe rmtree)
            else:
                os.unlink(name, dir_fd=fd)
        finally:
            self._forget()

    def _whiteout(self, dir_parts: list[str], name: str, this_layer: set[str]) -> None:
        if not name or name in (".", ".."):
            raise Refused(f"whiteout {'/'.join(dir_parts + [WHITEOUT + name])!r} names no file")
        key = "/".join(dir_parts + [name])
        if key in this_layer:
            return  # a whiteout hides the lower layers only
        fd = self._dir(dir_parts, create=False)
        if fd is None:
            return
        try:
            self._remove(fd, name)
        except FileNotFoundError:
            pass

    def _opaque(self, dir_parts: list[str], this_layer: set[str]) -> None:
        fd = self._dir(dir_parts, create=True)
        prefix = "/".join(dir_parts) + "/" if dir_parts else ""
        fd = os.dup(fd)
        try:
            for name in os.listdir(fd):
                if prefix + name not in this_layer:
                    self._remove(fd, name)
        finally:
            os.close(fd)

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], key: str) -> None:
        fd = self._dir(parts[:-1], create=True)
        name = parts[-1]
        try:
            existing = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            existing = None
        if member.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                self._remove(fd, name)
                fd = self._dir(parts[:-1], create=True)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=fd)
            self.dirs[key] = member
            return
        if member.islnk():
            target = _layer_parts(member.linkname)
            if not target or "/".join(target) == key:
                raise Refused(f"hard link /{key} -> {member.linkname!r} names no other file")
        if existing is not None:
            self._remove(fd, name)
            fd = self._dir(parts[:-1], create=True)
        mode = member.mode & 0o7777
        if member.isreg():
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                source = tar.extractfile(member)
                assert source is not None
                while chunk := source.read(1 << 20):
                    f.write(chunk)
                f.flush()
                self._xattrs(f.fileno(), member, key)
                if self.is_root:
                    os.fchown(f.fileno(), member.uid, member.gid)
                os.fchmod(f.fileno(), mode)
                os.utime(f.fileno(), (member.mtime, member.mtime))
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=fd)
            if self.is_root:
                os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
            os.utime(name, (member.mtime, member.mtime), dir_fd=fd, follow_symlinks=False)
        elif member.islnk():
            target = _layer_parts(member.linkname)
            source = self._dir(target[:-1], create=False)
            source_dir = os.dup(source) if source is not None else -1
            self._link(source_dir, target, name, parts, key, member)
        elif member.isfifo():
            os.mkfifo(name, mode, dir_fd=fd)
            if self.is_root:
                os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        else:
            raise Refused(f"/{key} has a tar type kvmpod does not unpack ({member.type!r})")

    def _link(self, source_dir: int, target: list[str], name: str, parts: list[str], key: str,
              member: tarfile.TarInfo) -> None:
        if source_dir < 0:
            raise Refused(f"hard link /{key} -> {member.linkname!r}: no such file in the image")
        try:
            try:
                st = os.lstat(target[-1], dir_fd=source_dir)
            except FileNotFoundError:
                raise Refused(f"hard link /{key} -> {member.linkname!r}: no such file in the image") from None
            if stat.S_ISDIR(st.st_mode):
                raise Refused(f"hard link /{key} -> {member.linkname!r} names a directory")
            fd = self._dir(parts[:-1], create=True)
            os.link(target[-1], name, src_dir_fd=source_dir, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(source_dir)

    def _xattrs(self, fd: int, member: tarfile.TarInfo, key: str) -> None:
        if not self.is_root:
            return
        for header, value in member.pax_headers.items():
            if header == "SCHILY.xattr.security.capability":
                try:
                    os.setxattr(fd, "security.capability", value.encode("utf-8", "surrogateescape"))
                except OSError as error:
                    self.warn(f"/{key}: its file capabilities cannot be kept here ({error.strerror})")

    def finish(self) -> None:
        """Owners, modes and times of the directories, deepest first (a 0555 directory is written
        into before it becomes 0555)."""
        for key in sorted(self.dirs, key=lambda k: -k.count("/") - (1 if k else 0)):
            member = self.dirs[key]
            parts = key.split("/") if key else []
            self._forget()
            try:
                parent = self._dir(parts[:-1], create=False) if parts else self.root_fd
                if parent is None:
                    continue
                fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent) if parts else os.dup(self.root_fd)
            except (OSError, Refused):
                continue  # removed or replaced by a later layer
            try:
                if self.is_root:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode & 0o7777)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)


# ---------------------------------------------------------------- reading a layer, checked

class _Hashing(io.RawIOBase):
    def __init__(self, source, algorithm: str = "sha256") -> None:
        self.source = source
        self.hash = hashlib.new(algorithm)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        buffer[:len(data)] = data
        self.hash.update(data)
        return len(data)

    def drain(self) -> None:
        while self.readinto(bytearray(1 << 20)):
            pass


def _check(hashing: _Hashing, digest: str, what: str) -> None:
    if f"{digest.split(':')[0]}:{hashing.hash.hexdigest()}" != digest:
        raise ImageError(f"{what} does not match its digest {digest}: the image is damaged or was changed")


def apply_image_layers(image: Image, applier: Applier) -> None:
    """Every layer of `image`, bottom first, each checked against its digest and diff_id."""
    for i, layer in enumerate(image.layers):
        if layer.media_type not in LAYER_MEDIA_TYPES:
            raise ImageError(f"layers[{i}] has media type {layer.media_type!r}, which kvmpod does not unpack "
                             f"(tar, tar+gzip or tar+zstd)")
        _apply_one(image, i, layer, applier)


def _apply_one(image: Image, i: int, layer: Layer, applier: Applier) -> None:
    what = f"layers[{i}] ({layer.digest or layer.name})"
    try:
        raw_file = image.blobs.open(layer.name)
    except (OSError, KeyError, tarfile.TarError) as error:
        raise ImageError(f"cannot read {what}: {getattr(error, 'strerror', None) or error}") from None
    with raw_file:
        raw = _Hashing(raw_file, (layer.digest or "sha256:").split(":")[0])
        buffered = io.BufferedReader(raw, 1 << 20)
        magic = buffered.peek(4)[:4]
        zstd = None
        feeder = None
        if magic[:2] == b"\x1f\x8b":
            import gzip
            plain = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif magic == b"\x28\xb5\x2f\xfd":
            try:
                zstd = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except FileNotFoundError:
                raise ImageError(f"{what} is zstd-compressed and the zstd program is not installed "
                                 f"(apt install zstd)") from None
            failure: list[BaseException] = []

            def feed() -> None:
                try:
                    while chunk := buffered.read(1 << 20):
                        zstd.stdin.write(chunk)
                except BaseException as error:  # a broken pipe when zstd fails: reported by its status
                    failure.append(error)
                finally:
                    try:
                        zstd.stdin.close()
                    except OSError:
                        pass

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            plain = zstd.stdout
        else:
            plain = buffered
        diff = _Hashing(plain, (layer.diff_id or "sha256:").split(":")[0])
        stream = io.BufferedReader(diff, 1 << 20)
        try:
            try:
                applier.apply(stream, what)
                while stream.read(1 << 20):  # the tar's end blocks and padding, for the digests
                    pass
            except (tarfile.TarError, EOFError, OSError, ValueError) as error:
                if zstd is not None:
                    zstd.kill()
                raise ImageError(f"{what} cannot be unpacked: {error}") from None
            if zstd is not None:
                feeder.join()
                if zstd.wait() != 0:
                    raise ImageError(f"{what}: zstd cannot decompress it (exit status {zstd.returncode})")
            else:
                buffered.read()
        finally:
            if zstd is not None:
                zstd.kill()
                zstd.wait()
                zstd.stdout.close()
        if layer.digest:
            _check(raw, layer.digest, what)
        if layer.diff_id:
            _check(diff, layer.diff_id, f"{what}, uncompressed,")
