"""The image store: OCI and Docker images unpacked once, kept by digest, as rkt's CAS and
treestore kept them.

    <images>/                     $KVMPOD_IMAGES_DIR, else $KVMPOD_DIR/images, else /var/lib/kvmpod/images
      sha256-<hex>/               one image, keyed by its manifest's digest (a docker-archive, which
                                  has no manifest blob: its image ID, the config's digest); IMMUTABLE
                                  once renamed into place: pods copy from it (or, later, overlay it as
                                  a lower layer) and never write to it
        manifest                  the appc image manifest (image_config.py)
        rootfs/                   the image's layers applied (layers.py)
        image.json                digest, name, reference, config digest, size, when fetched
      sha256-<hex>.use            the mutable part beside it: last use (mtime) and every name it
                                  was fetched as (JSON)
    <images> is mode 0700: an image's files keep their owners and modes, and a setuid-root program of
    an image must never be something a user of the host can run from the store.

      .locks/sha256-<hex>.lock    flock()ed while the entry is made or removed
      .tmp/sha256-<hex>.<pid>/    an entry being made: renamed into place when complete, so an
                                  entry is there whole or not at all; a killed fetch's leftover is
                                  removed by the next fetch of that image

Concurrent fetches of one image: the second waits for the first's lock, then finds the entry and
unpacks nothing ("image X: already in the store").

For the run path (kvmpod run, the cli): `fetch(reference)` gives a StoredImage whose `path` is an
ACI-shaped directory (manifest, rootfs/), which run.install_app installs like any unpacked image;
then, once the pod directory exists and its lock is held, call
`record_use(pod_path, [stored.digest, ...])`: it writes <pod>/images.json, which
`images_in_use(running_pod_paths)` reads, so `kvmpod image gc` and `image rm` never remove an image
a running pod was made from (pods/pod_dirs.is_running says which pods run: the glue is in
pod_commands.py, as this room imports no other).
"""

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...pod.manifest import parse_image_app
from ...pod.problems import InvalidInput, Problem
from .image_config import image_manifest
from .image_source import ImageError, is_image_reference, open_image, parse_reference
from .layers import Applier, apply_image_layers
from .safe_paths import Refused

IMAGES_ENV = "KVMPOD_IMAGES_DIR"
STATE_ENV = "KVMPOD_DIR"
DEFAULT_STATE_DIR = "/var/lib/kvmpod"
POD_IMAGES_FILE = "images.json"

__all__ = ["StoredImage", "is_image_reference", "fetch", "record_use", "images_in_use", "images_dir",
           "stored_images", "entry_path"]


def images_dir() -> str:
    return os.environ.get(IMAGES_ENV) or os.path.join(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR, "images")


@dataclass(frozen=True)
class StoredImage:
    digest: str  # "sha256:..." of the image manifest (docker-archive: of its config, the image ID)
    name: str  # e.g. "example.com/web:1.0", or the layout's base name and ref
    path: str  # the entry: <path>/manifest (appc image manifest JSON) and <path>/rootfs/


def entry_path(digest: str, base: str | None = None) -> str:
    return os.path.join(base or images_dir(), digest.replace(":", "-"))


def _say_nothing(text: str) -> None:
    pass


class _Lock:
    def __init__(self, base: str, digest: str) -> None:
        locks = os.path.join(base, ".locks")
        os.makedirs(locks, mode=0o700, exist_ok=True)
        self.fd = os.open(os.path.join(locks, digest.replace(":", "-") + ".lock"),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> "_Lock":
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _problem(reference: str, message: str) -> InvalidInput:
    return InvalidInput([Problem(f"image {reference}", message)])


def fetch(reference: str, say: Callable[[str], None] = _say_nothing) -> StoredImage:
    """The image `reference` names, in the store (unpacked now unless it already is).
    InvalidInput naming the reference and what is wrong with it."""
    try:
        image = open_image(parse_reference(reference))
    except ImageError as error:
        raise _problem(reference, str(error)) from None
    try:
        return _store(image, reference, say)
    finally:
        image.close()


def _store(image, reference: str, say: Callable[[str], None]) -> StoredImage:
    base = images_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    if os.stat(base).st_mode & 0o077 and os.stat(base).st_uid == os.geteuid():
        os.chmod(base, 0o700)  # the images' setuid programs must not be reachable by the host's users
    entry = entry_path(image.digest, base)
    stored = StoredImage(image.digest, image.name, entry)
    with _Lock(base, image.digest):
        if os.path.isdir(entry):
            say(f"image {image.name}: already in the store ({image.digest})")
            _note_use(stored)
            return stored
        tmp_base = os.path.join(base, ".tmp")
        os.makedirs(tmp_base, mode=0o700, exist_ok=True)
        stem = os.path.basename(entry)
        for leftover in os.listdir(tmp_base):  # a killed fetch's, safe to remove under the lock
            if leftover.startswith(stem + "."):
                shutil.rmtree(os.path.join(tmp_base, leftover), ignore_errors=True)
        tmp = os.path.join(tmp_base, f"{stem}.{os.getpid()}")
        started = time.monotonic()
        say(f"image {image.name}: unpacking {len(image.layers)} layer{'s' * (len(image.layers) != 1)} "
            f"({image.digest})")
        try:
            os.makedirs(os.path.join(tmp, "rootfs"), mode=0o755)
            applier = Applier(os.path.join(tmp, "rootfs"), lambda text: say(f"image {image.name}: warning: {text}"))
            try:
                apply_image_layers(image, applier)
                applier.finish()
            finally:
                applier.close()
            manifest = image_manifest(image, os.path.join(tmp, "rootfs"),
                                      lambda text: say(f"image {image.name}: warning: {text}"))
            manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
            parse_image_app(json.loads(manifest_bytes), f"{image.name} (converted)")  # kvmpod's own parser
            _write(os.path.join(tmp, "manifest"), manifest_bytes)
            size = tree_size(os.path.join(tmp, "rootfs"))
            info = {"digest": image.digest, "name": image.name, "reference": reference,
                    "config_digest": image.config_digest, "size": size, "fetched": time.time()}
            _write(os.path.join(tmp, "image.json"), (json.dumps(info, indent=2) + "\n").encode())
            os.chmod(tmp, 0o755)
            os.rename(tmp, entry)
        except ImageError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _problem(reference, str(error)) from None
        except Refused as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _problem(reference, f"{error}; the image is refused") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _note_use(stored)
        say(f"image {image.name}: stored as {image.digest} ({human_size(size)}) in "
            f"{time.monotonic() - started:.1f} s")
    return stored


def _write(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def tree_size(path: str) -> int:
    """Bytes of the files under `path`, each inode once (du's apparent size)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# ---------------------------------------------------------------- use, by pods and by fetch

def _use_file(entry: str) -> str:
    return entry.rstrip("/") + ".use"


def read_use(entry: str) -> tuple[float | None, list[str]]:
    """(last use, names) of an entry."""
    path = _use_file(entry)
    try:
        with open(path) as f:
            names = json.load(f).get("names", [])
        return os.stat(path).st_mtime, [n for n in names if isinstance(n, str)]
    except (OSError, ValueError, AttributeError):
        return None, []


def _note_use(stored: StoredImage) -> None:
    _, names = read_use(stored.path)
    if stored.name not in names:
        names.append(stored.name)
    tmp = _use_file(stored.path) + f".{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"names": names}, f)
    os.replace(tmp, _use_file(stored.path))


def record_use(pod_path: str, images: Iterable[StoredImage | str]) -> None:
    """Call with the pod directory made and locked, before its apps are installed from the store:
    <pod>/images.json lists the digests, and each entry's last use becomes now."""
    digests = sorted({i.digest if isinstance(i, StoredImage) else i for i in images})
    with open(os.path.join(pod_path, POD_IMAGES_FILE), "w") as f:
        json.dump(digests, f)
    for digest in digests:
        use = _use_file(entry_path(digest))
        if os.path.exists(use):
            os.utime(use)


def images_in_use(running_pod_paths: Iterable[str]) -> dict[str, list[str]]:
    """{digest: [pod directory, ...]} for the images the given (running) pods were made from."""
    used: dict[str, list[str]] = {}
    for pod_path in running_pod_paths:
        try:
            with open(os.path.join(pod_path, POD_IMAGES_FILE)) as f:
                digests = json.load(f)
        except (OSError, ValueError):
            continue
        for digest in digests if isinstance(digests, list) else []:
            if isinstance(digest, str):
                used.setdefault(digest, []).append(pod_path)
    return used


def is_store_entry(path: str) -> bool:
    base = os.path.realpath(images_dir())
    return os.path.dirname(os.path.realpath(path)) == base and os.path.isfile(os.path.join(path, "image.json"))


def stored_image_at(path: str) -> StoredImage | None:
    try:
        with open(os.path.join(path, "image.json")) as f:
            info = json.load(f)
        return StoredImage(info["digest"], info["name"], path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Entry:
    digest: str
    name: str
    names: tuple[str, ...]
    path: str
    size: int
    fetched: float | None
    last_used: float | None


def stored_images(base: str | None = None) -> list[Entry]:
    base = base or images_dir()
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = os.path.join(base, name)
        if name.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            with open(os.path.join(path, "image.json")) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        last_used, used_names = read_use(path)
        entries.append(Entry(info.get("digest", name), info.get("name", name),
                             tuple(dict.fromkeys([info.get("name", name), *used_names])), path,
                             int(info.get("size") or 0), info.get("fetched"), last_used or info.get("fetched")))
    return entries


def remove_entry(entry: Entry) -> None:
    """Out of the store at once (renamed away under its lock), then deleted."""
    base = os.path.dirname(entry.path)
    with _Lock(base, entry.digest):
        if not os.path.isdir(entry.path):
            return
        tmp_base = os.path.join(base, ".tmp")
        os.makedirs(tmp_base, mode=0o700, exist_ok=True)
        gone = os.path.join(tmp_base, f"{os.path.basename(entry.path)}.removing.{os.getpid()}")
        os.rename(entry.path, gone)
        try:
            os.unlink(_use_file(entry.path))
        except FileNotFoundError:
            pass
        shutil.rmtree(gone, ignore_errors=True)
