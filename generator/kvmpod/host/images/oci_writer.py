"""Write an image from a directory: an OCI image layout (`oci:DIR:REF`) or a docker-archive
(`docker save`'s format), one layer holding the directory as it is (owners, modes, links).

Used by the tests (every reader case is checked against images skopeo also reads) and by the
README's example, which makes a runnable image from the stage1's static busybox without network:

    write_oci_layout(rootfs_dir, {"Entrypoint": ["/bin/sh"], "User": "1000"}, "out/web", ref="1.0")
    write_docker_archive(rootfs_dir, config, "web.tar", "example.com/web:1.0")

`config` is the image config's `config` object (Entrypoint, Cmd, Env, User, WorkingDir,
ExposedPorts, Volumes, Labels, as the OCI image spec's config.md names them).
"""

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
import time

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"
REF_NAME = "org.opencontainers.image.ref.name"

# Go's GOARCH names, as image configs spell them (OCI image spec, config.md "architecture").
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def layer_tar(rootfs_dir: str) -> bytes:
    """An uncompressed layer of everything under `rootfs_dir` (names relative, sorted, owners kept
    as numbers, hard links as links; times of the files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs_dir):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, rootfs_dir))
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(config: dict, diff_ids: list[str], architecture: str | None = None, os_name: str = "linux") -> dict:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "architecture": architecture or host_architecture(),
            "os": os_name, "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "kvmpod.host.images.oci_writer"} for _ in diff_ids]}


def _put_blob(out_dir: str, data: bytes) -> dict:
    digest = _digest(data)
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    path = os.path.join(blobs, digest.split(":", 1)[1])
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return {"digest": digest, "size": len(data)}


def compress(layer: bytes, media_type: str) -> bytes:
    if media_type == LAYER_GZIP:
        return gzip.compress(layer, mtime=0)
    if media_type == LAYER_ZSTD:
        import subprocess
        return subprocess.run(["zstd", "-q", "-c"], input=layer, stdout=subprocess.PIPE, check=True).stdout
    return layer


def write_oci_image(out_dir: str, config_document: dict | bytes, layers: list[tuple[bytes, str]], ref: str | None = "latest",
                    platform_: dict | None = None, manifest_annotations: dict | None = None) -> str:
    """Add one image to the OCI layout `out_dir` (made when missing): `layers` are (blob as stored,
    media type), bottom first. Returns the manifest's digest. With `platform_`, the index entry
    names it (as multi-arch indexes do)."""
    os.makedirs(out_dir, exist_ok=True)
    config_bytes = config_document if isinstance(config_document, bytes) else json.dumps(config_document).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, **_put_blob(out_dir, config_bytes)},
                "layers": [{"mediaType": media_type, **_put_blob(out_dir, blob)} for blob, media_type in layers]}
    if manifest_annotations:
        manifest["annotations"] = manifest_annotations
    manifest_bytes = json.dumps(manifest).encode()
    entry = {"mediaType": OCI_MANIFEST, **_put_blob(out_dir, manifest_bytes)}
    if ref is not None:
        entry["annotations"] = {REF_NAME: ref}
    if platform_ is not None:
        entry["platform"] = platform_
    index_path = os.path.join(out_dir, "index.json")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    if ref is not None and platform_ is None:  # a ref names one image: the new one replaces the old
        index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != ref]
    index["manifests"].append(entry)
    with open(os.path.join(out_dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(index_path + ".tmp", "w") as f:
        json.dump(index, f)
    os.replace(index_path + ".tmp", index_path)
    return entry["digest"]


def write_oci_layout(rootfs_dir: str, config: dict, out_dir: str, ref: str = "latest",
                     media_type: str = LAYER_GZIP) -> str:
    """The image of `rootfs_dir` with `config` into the OCI layout `out_dir` as `ref`; its manifest digest."""
    layer = layer_tar(rootfs_dir)
    document = image_config(config, [_digest(layer)])
    return write_oci_image(out_dir, document, [(compress(layer, media_type), media_type)], ref)


def write_docker_archive(rootfs_dir: str, config: dict, out_tar: str, repo_tag: str | None) -> str:
    """`docker save`'s format (manifest.json, the config as <id>.json, <layer>/layer.tar) for the
    image of `rootfs_dir`, tagged `repo_tag`; returns the image ID (the config's digest)."""
    layer = layer_tar(rootfs_dir)
    document = image_config(config, [_digest(layer)])
    config_bytes = json.dumps(document).encode()
    image_id = _digest(config_bytes)
    layer_dir = hashlib.sha256(layer).hexdigest()
    manifest = [{"Config": image_id.split(":")[1] + ".json", "RepoTags": [repo_tag] if repo_tag else [],
                 "Layers": [f"{layer_dir}/layer.tar"]}]
    files = [(manifest[0]["Config"], config_bytes), (f"{layer_dir}/layer.tar", layer),
             ("manifest.json", json.dumps(manifest).encode())]
    if repo_tag:
        repo, _, tag = repo_tag.rpartition(":")
        files.append(("repositories", json.dumps({repo: {tag: layer_dir}}).encode()))
    tmp = out_tar + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(layer_dir)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out_tar)
    return image_id
