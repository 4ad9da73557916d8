"""Image references as the containers tools (skopeo, podman) spell them, and the image they name:

    oci:PATH[:REF]                  an OCI image layout directory (image-layout.md)
    oci-archive:PATH[:REF]          the same as a tar (skopeo copy ... oci-archive:)
    docker-archive:PATH[:REPO:TAG]  what docker save / podman save write (manifest.json);
                                    also docker-archive:PATH:@N, the N-th image in it

As in containers/image, PATH ends at the first ':' after the transport. REF matches an index
entry's org.opencontainers.image.ref.name; without one: the layout's only image, else `latest`.
An entry that is an image index (multi-arch) is resolved for this host's architecture.

Everything read is checked against its digest: the manifest and config as read, each layer blob
while it is read (layers.py), and each layer's uncompressed tar against the config's diff_ids.
An image for another OS or architecture is refused before any layer is read.
"""

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass

from .oci_writer import OCI_INDEX, OCI_MANIFEST, REF_NAME, host_architecture

TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MAX_JSON_BYTES = 4 << 20  # an index, manifest or config larger than this is not an image's
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageError(Exception):
    """What is wrong with the image a reference names (the caller names the reference)."""


def is_image_reference(word: str) -> bool:
    return word.startswith(TRANSPORTS)


@dataclass(frozen=True)
class Reference:
    transport: str  # "oci", "oci-archive", "docker-archive"
    path: str
    ref: str | None  # the REF, REPO:TAG or @N; None when not given
    text: str  # as the user wrote it


def parse_reference(word: str) -> Reference:
    transport, _, rest = word.partition(":")
    if not is_image_reference(word):
        raise ImageError("is not an image reference; give oci:PATH[:REF], oci-archive:PATH[:REF] or "
                         "docker-archive:PATH[:REPO:TAG]")
    path, colon, ref = rest.partition(":")
    if not path:
        raise ImageError(f"names no path; give {transport}:PATH")
    if colon and not ref:
        raise ImageError(f"ends with ':' but names no {'REPO:TAG' if transport == 'docker-archive' else 'REF'}")
    return Reference(transport, os.path.abspath(path), ref or None, word)


# ---------------------------------------------------------------- blobs, from a directory or a tar

class _Blobs:
    def open(self, name: str):
        raise NotImplementedError

    def read(self, name: str, what: str, digest: str | None = None) -> bytes:
        try:
            with self.open(name) as f:
                data = f.read(MAX_JSON_BYTES + 1)
        except (OSError, KeyError, tarfile.TarError) as error:
            raise ImageError(f"cannot read its {what} ({name}): {getattr(error, 'strerror', None) or error}") from None
        if len(data) > MAX_JSON_BYTES:
            raise ImageError(f"its {what} ({name}) is larger than {MAX_JSON_BYTES >> 20} MiB")
        if digest is not None:
            check_digest(data, digest, what)
        return data

    def close(self) -> None:
        pass


class _DirBlobs(_Blobs):
    def __init__(self, path: str) -> None:
        if not os.path.isdir(path):
            raise ImageError(f"{path} is not a directory (an OCI image layout)" if os.path.exists(path)
                             else f"{path} does not exist")
        self.path = path

    def open(self, name: str):
        return open(os.path.join(self.path, name), "rb")


class _TarBlobs(_Blobs):
    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise ImageError(f"{path} is not a file (a tar archive)" if os.path.exists(path) else f"{path} does not exist")
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {}
            for member in self.tar:
                self.members[os.path.normpath(member.name).lstrip("/")] = member
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ImageError(f"{path} cannot be read as a tar archive: {error}") from None

    def open(self, name: str):
        member = self.members.get(os.path.normpath(name))
        if member is None or not (member.isfile() or member.islnk()):
            raise KeyError(f"the archive has no file {name}")
        return self.tar.extractfile(member)

    def close(self) -> None:
        self.tar.close()


def check_digest(data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if hashlib.new(algorithm, data).hexdigest() != expected:
        raise ImageError(f"its {what} does not match its digest {digest}: the image is damaged or was changed")


def blob_name(digest: str, what: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageError(f"its {what} has digest {digest!r}, not sha256:<64 hex> or sha512:<128 hex>")
    return "blobs/" + digest.replace(":", "/")


def _json(data: bytes, what: str) -> dict:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ImageError(f"its {what} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ImageError(f"its {what} is not a JSON object")
    return document


# ---------------------------------------------------------------- the image

@dataclass(frozen=True)
class Layer:
    name: str  # where in the source
    digest: str | None  # of the blob as stored (None: docker-archive layers, checked by diff_id)
    diff_id: str | None  # of the uncompressed tar
    media_type: str


@dataclass
class Image:
    reference: Reference
    name: str  # for people: example.com/web:1.0, or the layout's base name and its ref
    digest: str  # the manifest's (a docker-archive, which has none: the image ID, its config's digest)
    config: dict
    config_digest: str
    layers: list[Layer]
    blobs: _Blobs

    def close(self) -> None:
        self.blobs.close()


def open_image(reference: Reference) -> Image:
    """The image `reference` names, its manifest and config read and checked. Raises ImageError."""
    if reference.transport == "docker-archive":
        blobs: _Blobs = _TarBlobs(reference.path)
    elif reference.transport == "oci-archive":
        blobs = _TarBlobs(reference.path)
    else:
        blobs = _DirBlobs(reference.path)
    try:
        image = _docker_archive(reference, blobs) if reference.transport == "docker-archive" else _oci(reference, blobs)
        _check_platform(image.config)
        return image
    except BaseException:
        blobs.close()
        raise


def _platform_matches(platform: object) -> bool:
    return (isinstance(platform, dict) and platform.get("os") == "linux"
            and platform.get("architecture") == host_architecture())


def _check_platform(config: dict) -> None:
    os_name, arch = config.get("os"), config.get("architecture")
    if os_name != "linux" or arch != host_architecture():
        raise ImageError(f"is an image for {os_name}/{arch}; this host runs linux/{host_architecture()} "
                         f"(give an image built for linux/{host_architecture()})")


def _oci(reference: Reference, blobs: _Blobs) -> Image:
    layout = _json(blobs.read("oci-layout", "oci-layout file"), "oci-layout file")
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise ImageError(f"its oci-layout says imageLayoutVersion {layout.get('imageLayoutVersion')!r}, not \"1.0.0\"")
    index = _json(blobs.read("index.json", "index.json"), "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries) or not entries:
        raise ImageError("its index.json lists no image (manifests[] is empty or not a list of objects)")
    named = {}
    for e in entries:
        ref = (e.get("annotations") or {}).get(REF_NAME) if isinstance(e.get("annotations"), dict) else None
        named.setdefault(ref, []).append(e)
    if reference.ref is not None:
        chosen = named.get(reference.ref)
        if not chosen:
            refs = sorted(r for r in named if r is not None)
            raise ImageError(f"has no image named {reference.ref!r} (its refs: {', '.join(refs) or 'none'})")
    elif len(entries) == 1 or len({json.dumps(e.get("digest")) for e in entries}) == 1:
        chosen = entries[:1]
    elif named.get("latest"):
        chosen = named["latest"]
    elif all("platform" in e for e in entries):
        chosen = entries  # one multi-arch set of images without names
    else:
        refs = sorted(r for r in named if r is not None)
        raise ImageError(f"holds {len(entries)} images and none is named 'latest'; add :REF (its refs: "
                         f"{', '.join(refs) or 'none'})")
    descriptor = _for_this_host(chosen, "index.json")
    manifest_bytes, manifest = _resolve(blobs, descriptor, depth=0)
    ref_name = (descriptor.get("annotations") or {}).get(REF_NAME) if isinstance(descriptor.get("annotations"), dict) else None
    ref_name = reference.ref or ref_name
    base = os.path.basename(reference.path.rstrip("/"))
    if reference.transport == "oci-archive":
        base = re.sub(r"\.(tar|oci)$", "", base)
    name = ref_name if ref_name and ("/" in ref_name or ":" in ref_name) else (
        f"{base}:{ref_name}" if ref_name and _TAG.match(ref_name) else base)
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    config_descriptor = manifest.get("config")
    if not isinstance(config_descriptor, dict):
        raise ImageError("its manifest has no config descriptor")
    config_digest = config_descriptor.get("digest")
    config = _json(blobs.read(blob_name(config_digest, "config"), "config", config_digest), "config")
    diff_ids = _diff_ids(config)
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list) or not all(isinstance(d, dict) for d in raw_layers):
        raise ImageError("its manifest's layers is not a list of descriptors")
    if len(raw_layers) != len(diff_ids):
        raise ImageError(f"its manifest lists {len(raw_layers)} layers but its config's rootfs.diff_ids "
                         f"{len(diff_ids)}")
    layers = [Layer(blob_name(d.get("digest"), f"layers[{i}]"), d["digest"], diff_ids[i], str(d.get("mediaType")))
              for i, d in enumerate(raw_layers)]
    return Image(reference, name, digest, config, config_digest, layers, blobs)


def _for_this_host(descriptors: list[dict], where: str) -> dict:
    if len(descriptors) == 1:
        return descriptors[0]
    matching = [d for d in descriptors if _platform_matches(d.get("platform"))]
    if not matching:
        platforms = sorted({f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                            for d in descriptors})
        raise ImageError(f"has no image for linux/{host_architecture()} in {where} (it has: {', '.join(platforms)})")
    return matching[0]


def _resolve(blobs: _Blobs, descriptor: dict, depth: int) -> tuple[bytes, dict]:
    """The image manifest a descriptor leads to, through nested indexes (multi-arch)."""
    if depth > 4:
        raise ImageError("its indexes nest more than 4 deep")
    digest = descriptor.get("digest")
    data = _blobs_read(blobs, digest, "manifest")
    document = _json(data, "manifest")
    media_type = document.get("mediaType") or descriptor.get("mediaType")
    if media_type in (OCI_INDEX, DOCKER_LIST) or ("manifests" in document and "layers" not in document):
        entries = document.get("manifests")
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ImageError(f"its image index {digest} lists no image")
        return _resolve(blobs, _for_this_host(entries, f"the image index {digest}"), depth + 1)
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST, None):
        raise ImageError(f"its manifest {digest} has media type {media_type!r}, not an image manifest")
    return data, document


def _blobs_read(blobs: _Blobs, digest: object, what: str) -> bytes:
    return blobs.read(blob_name(digest, what), what, digest)  # type: ignore[arg-type]


def _diff_ids(config: dict) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.match(d) for d in diff_ids):
        raise ImageError("its config's rootfs.diff_ids is not a list of digests")
    return diff_ids


def _docker_archive(reference: Reference, blobs: _Blobs) -> Image:
    entries = _json_list(blobs.read("manifest.json", "manifest.json"))
    if reference.ref is not None and reference.ref.startswith("@"):
        index = reference.ref[1:]
        if not index.isdigit() or int(index) >= len(entries):
            raise ImageError(f"has {len(entries)} images; @{index} names none (give @0 to @{len(entries) - 1})")
        entry = entries[int(index)]
        tags = entry.get("RepoTags") or []
        name = tags[0] if tags else os.path.basename(reference.path)
    elif reference.ref is not None:
        wanted = _normal_tag(reference.ref)
        found = [e for e in entries if wanted in {_normal_tag(t) for t in e.get("RepoTags") or [] if isinstance(t, str)}]
        if not found:
            tags = sorted(t for e in entries for t in e.get("RepoTags") or [] if isinstance(t, str))
            raise ImageError(f"has no image tagged {reference.ref!r} (its tags: {', '.join(tags) or 'none'})")
        entry, name = found[0], reference.ref
    elif len(entries) == 1:
        entry = entries[0]
        tags = entry.get("RepoTags") or []
        name = tags[0] if tags and isinstance(tags[0], str) else re.sub(r"\.tar$", "", os.path.basename(reference.path))
    else:
        raise ImageError(f"holds {len(entries)} images; add :REPO:TAG or :@N")
    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
        raise ImageError("its manifest.json entry lacks Config or Layers")
    config_bytes = blobs.read(config_name, "config")
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    stem = os.path.basename(config_name).removesuffix(".json")
    if re.fullmatch(r"[a-f0-9]{64}", stem) and f"sha256:{stem}" != config_digest:
        raise ImageError(f"its config {config_name} does not match its digest: the image is damaged or was changed")
    config = _json(config_bytes, "config")
    diff_ids = _diff_ids(config)
    if len(layer_names) != len(diff_ids):
        raise ImageError(f"its manifest.json lists {len(layer_names)} layers but its config's rootfs.diff_ids "
                         f"{len(diff_ids)}")
    layers = [Layer(n, None, diff_ids[i], "") for i, n in enumerate(layer_names)]
    return Image(reference, name, config_digest, config, config_digest, layers, blobs)


def _json_list(data: bytes) -> list[dict]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ImageError(f"its manifest.json is not JSON: {error}") from None
    if not isinstance(document, list) or not document or not all(isinstance(e, dict) for e in document):
        raise ImageError("its manifest.json lists no image")
    return document


def _normal_tag(tag: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if tag.startswith(prefix):
            tag = tag[len(prefix):]
    return tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"
