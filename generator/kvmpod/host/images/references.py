"""What an IMAGE word of `kvmpod run IMAGE ...` names: its name, the path kvmpod run installs as the
app's root, and its image manifest (host.pods.command_line builds the pod manifest from them).

- an `.aci` file: its `manifest` member, read from the archive (regular, at most 4 MiB);
- a directory with `manifest` and `rootfs/`: an unpacked image;
- any other directory: a bare root filesystem, named after the directory, with no manifest (the
  app then needs --exec).
"""

import os
import tarfile
from dataclasses import dataclass

from ...pod.files import MAX_FILE_BYTES, read_text
from ...pod.manifest import load_json
from ...pod.problems import InvalidInput, Problem


@dataclass(frozen=True)
class ResolvedImage:
    name: str  # the image's name (its manifest's, else the file or directory's)
    path: str  # what kvmpod run installs: the .aci or the directory
    manifest: dict | None  # the image manifest; None for a bare root filesystem
    image_id: str | None = None


IMAGE_HINT = ("give an .aci file, an unpacked image directory (manifest and rootfs/) or a root filesystem "
              "directory")


def _manifest_document(text: str, source: str, field: str) -> dict:
    try:
        document = load_json(text, source)
    except InvalidInput as error:
        raise InvalidInput([Problem(field, str(p)) for p in error.problems]) from None
    if not isinstance(document, dict):
        raise InvalidInput([Problem(field, f"{source} is not a JSON object (an appc image manifest)")])
    return document


def aci_manifest(path: str, field: str) -> dict:
    """The image manifest inside an .aci, without unpacking anything else."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.name not in ("manifest", "./manifest"):
                    continue
                if not member.isfile() or member.size > MAX_FILE_BYTES:
                    raise InvalidInput([Problem(field, f"{path}: its manifest is not a regular file of at most "
                                                       f"{MAX_FILE_BYTES // 2**20} MiB")])
                data = tar.extractfile(member).read(MAX_FILE_BYTES + 1)  # type: ignore[union-attr]
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    raise InvalidInput([Problem(field, f"{path}: its manifest is not UTF-8")]) from None
                return _manifest_document(text, f"{path}:manifest", field)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidInput([Problem(field, f"{path} cannot be read as an .aci (a tar): {error}")]) from None
    raise InvalidInput([Problem(field, f"{path} holds no manifest; an .aci has manifest and rootfs/")])


def _name(document: dict, fallback: str) -> str:
    name = document.get("name")
    return name if isinstance(name, str) and name else fallback


def resolve_local(word: str, cwd: str | None = None) -> ResolvedImage:
    """An .aci or a directory, as --app takes them."""
    field = f"image {word}"
    path = os.path.abspath(os.path.join(cwd or os.getcwd(), word))
    if os.path.isfile(path) and path.endswith(".aci"):
        document = aci_manifest(path, field)
        return ResolvedImage(_name(document, os.path.basename(path)[:-4]), path, document)
    if os.path.isdir(path):
        base = os.path.basename(path.rstrip("/"))
        if os.path.isdir(os.path.join(path, "rootfs")) and os.path.lexists(os.path.join(path, "manifest")):
            text = read_text(os.path.join(path, "manifest"), f"{field}: manifest")
            document = _manifest_document(text or "", os.path.join(path, "manifest"), field)
            return ResolvedImage(_name(document, base), path, document)
        return ResolvedImage(base, path, None)
    if os.path.exists(path):
        raise InvalidInput([Problem(field, f"is neither a directory nor an .aci file; {IMAGE_HINT}")])
    raise InvalidInput([Problem(field, f"does not exist; {IMAGE_HINT}")])
