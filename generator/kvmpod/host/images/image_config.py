"""An OCI/Docker image config as an appc image manifest, as docker2aci made it
(github.com/appc/docker2aci lib/internal/internal.go, GenerateManifestV22):

    Entrypoint + Cmd      app.exec (Entrypoint first); a bare command name is looked up on the
                          image's PATH inside its rootfs (Docker's default PATH when it sets none)
    Env                   app.environment ("NAME=VALUE"; an entry without '=' is dropped)
    User                  app.user, app.group, as numbers: `name`, `uid`, `uid:gid`, `name:group`
                          looked up in the image's /etc/passwd and /etc/group; no group: the user's
                          primary group from /etc/passwd (0 for a uid it lacks), as Docker does;
                          empty: root. With no group given, the other groups of the image's
                          /etc/group listing the user are app.supplementaryGIDs, as Docker (runc's
                          GetExecUser) adds them; the guest gives its own database entries for
                          every such gid it lacks (systemd 252 refuses one it cannot find).
    WorkingDir            app.workingDirectory, made in the rootfs when missing (as Docker does)
    ExposedPorts          app.ports: "8080/tcp" -> {"name": "8080-tcp", "protocol": "tcp", "port": 8080}
    Volumes               app.mountPoints: "/var/lib/data" -> {"name": "volume-var-lib-data", ...}
                          (docker2aci's names; each is an implicit empty volume in the pod)
    Labels                annotations (names made valid AC identifiers)
    os, architecture      labels os, arch (appc spells arm64 aarch64); version: the tag

and docker2aci's annotations: appc.io/docker/repository, tag, originalname, registryurl,
imageid (the config's digest), manifesthash, entrypoint and cmd (JSON), plus author and created.
The guest treats an image with appc.io/docker/repository as Docker-converted (README).

docker2aci wrote user and group as the names given (rkt looked them up at run time); kvmpod looks
them up now, where a name missing from the image is an error before anything boots.
"""

import json
import os
import re
import stat
from collections.abc import Callable

from ...pod.user_database import entries, group_id, id_number
from .image_source import Image, ImageError
from .safe_paths import DIR_FLAGS, Refused, open_parent, read_in_root, resolve_in_root

DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AC_VERSION = "0.8.11"
_APPC_ARCH = {"arm64": "aarch64", "386": "i386", "arm": "armv7l"}


def sanitize_ac_name(text: str) -> str:
    """appc's SanitizeACName: lower case, [a-z0-9-], no '-' at either end."""
    return re.sub(r"^-+|-+$", "", re.sub(r"[^a-z0-9-]", "-", text.lower()))


def sanitize_ac_identifier(text: str) -> str:
    """appc's SanitizeACIdentifier: lower case, [a-z0-9-._~/] (others become '_'), none of -._~/ at the ends."""
    return re.sub(r"^[-._~/]+|[-._~/]+$", "", re.sub(r"[^a-z0-9\-._~/]", "_", text.lower()))


def split_name(name: str) -> tuple[str, str | None]:
    """("example.com/web", "1.0") from "example.com/web:1.0"; a digest is dropped."""
    name = name.split("@", 1)[0]
    repo, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return repo, tag
    return name, None


def convert_ports(exposed: object, warn: Callable[[str], None]) -> list[dict]:
    ports = []
    for spec in sorted(exposed) if isinstance(exposed, dict) else []:
        number, _, protocol = str(spec).partition("/")
        protocol = protocol or "tcp"
        if not number.isdigit() or not 1 <= int(number) <= 65535:
            warn(f"ExposedPorts {spec!r} is not a port number; left out")
            continue
        if protocol not in ("tcp", "udp"):
            warn(f"ExposedPorts {spec!r}: kvmpod serves tcp and udp ports; left out")
            continue
        ports.append({"name": sanitize_ac_name(spec), "protocol": protocol, "port": int(number),
                      "count": 1, "socketActivated": False})
    return sorted(ports, key=lambda p: p["name"])


def convert_volumes(volumes: object) -> list[dict]:
    points = []
    seen: dict[str, int] = {}
    for path in sorted(volumes) if isinstance(volumes, dict) else []:
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        name = sanitize_ac_name(os.path.join("volume", path.lstrip("/")).rstrip("/")) or "volume"
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name] - 1}"
        else:
            seen[name] = 1
        points.append({"name": name, "path": os.path.normpath(path), "readOnly": False})
    return sorted(points, key=lambda p: p["name"])


def _database(rootfs: str, name: str) -> str | None:
    """The text of the image's /etc/<name> (symlinks resolved inside the image); None when it has none."""
    data = read_in_root(rootfs, f"/etc/{name}")
    return None if data is None else data.decode("utf-8", "replace")


def resolve_user(rootfs: str, user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for a Docker User, from the image's /etc/passwd and /etc/group."""
    if not user:
        return 0, 0, []
    name, colon, group = user.partition(":")
    passwd = entries(_database(rootfs, "passwd"), 4)
    group_text = _database(rootfs, "group")
    groups = entries(group_text, 3)
    uid = id_number(name)
    entry = next((e for e in passwd if (e[0] == name if uid is None else id_number(e[2]) == uid)), None)
    if uid is None:
        if entry is None or id_number(entry[2]) is None:
            raise ImageError(f"its User {user!r}: no user {name!r} in the image's /etc/passwd (give a uid, "
                             f"or add the user to the image)")
        uid = id_number(entry[2])
    login = entry[0] if entry is not None else None
    if colon and group:
        gid = id_number(group)
        if gid is None:
            gid = group_id(group_text, group)
            if gid is None:
                raise ImageError(f"its User {user!r}: no group {group!r} in the image's /etc/group (give a gid, "
                                 f"or add the group to the image)")
    else:
        gid = (id_number(entry[3]) if entry is not None else None) or 0
    extra = sorted({id_number(e[2]) for e in groups if login is not None and len(e) > 3
                    and login in e[3].split(",") and id_number(e[2]) is not None} - {gid}) if not colon else []
    return uid, gid, extra  # type: ignore[return-value]


def _is_program(rootfs: str, path: str) -> bool:
    parts = resolve_in_root(rootfs, path)
    full = os.path.join(rootfs, *parts)
    try:
        st = os.lstat(full)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def resolve_command(rootfs: str, command: str, environment: dict[str, str]) -> str | None:
    """A bare program name's absolute path on the image's PATH, inside its rootfs; None when absent."""
    for directory in environment.get("PATH", DOCKER_DEFAULT_PATH).split(":"):
        if directory.startswith("/") and _is_program(rootfs, f"{directory}/{command}"):
            return f"{directory.rstrip('/')}/{command}"
    return None


def make_working_directory(rootfs: str, path: str) -> None:
    """mkdir -p inside the image (symlinks resolved inside it), root-owned 0755, as Docker does."""
    parts = resolve_in_root(rootfs, path)
    if not parts:
        return
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        fd = open_parent(root_fd, parts + ["."], create=True)
        os.close(fd)
    except Refused:
        raise ImageError(f"its WorkingDir {path!r} is not a directory in the image") from None
    finally:
        os.close(root_fd)


def image_manifest(image: Image, rootfs: str, warn: Callable[[str], None]) -> dict:
    """The appc image manifest for `image`, whose layers are applied at `rootfs`."""
    document = image.config
    config = document.get("config") if isinstance(document.get("config"), dict) else {}
    repository, tag = split_name(image.name)
    name = sanitize_ac_identifier(repository) or "image"
    labels = [{"name": "os", "value": "linux"},
              {"name": "arch", "value": _APPC_ARCH.get(document.get("architecture"), document.get("architecture"))}]
    if tag:
        labels.append({"name": "version", "value": tag})
    entrypoint = [str(w) for w in config.get("Entrypoint") or []]
    cmd = [str(w) for w in config.get("Cmd") or []]
    environment: dict[str, str] = {}
    for entry in config.get("Env") or []:
        key, eq, value = str(entry).partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            environment[key] = value
        else:
            warn(f"Env {entry!r} is not NAME=VALUE with a valid name; left out")
    exec_ = entrypoint + cmd
    if exec_ and "/" not in exec_[0]:
        found = resolve_command(rootfs, exec_[0], environment)
        if found is None:
            warn(f"the command {exec_[0]!r} is not on the image's PATH; the guest looks for it again at start")
        else:
            exec_[0] = found
    uid, gid, extra = resolve_user(rootfs, str(config.get("User") or ""))
    app: dict = {"exec": exec_, "user": str(uid), "group": str(gid),
                 "environment": [{"name": k, "value": v} for k, v in environment.items()]}
    if extra:
        app["supplementaryGIDs"] = extra
    working_dir = config.get("WorkingDir")
    if isinstance(working_dir, str) and working_dir:
        if not working_dir.startswith("/"):
            working_dir = "/" + working_dir  # Docker: relative to /
        working_dir = os.path.normpath(working_dir)
        make_working_directory(rootfs, working_dir)
        app["workingDirectory"] = working_dir
    app["mountPoints"] = convert_volumes(config.get("Volumes"))
    app["ports"] = convert_ports(config.get("ExposedPorts"), warn)
    annotations: dict[str, str] = {}
    for key, value in sorted((config.get("Labels") or {}).items()):
        label = sanitize_ac_identifier(str(key))
        if label and isinstance(value, str) and value:
            annotations[label] = value
    registry = repository.split("/", 1)[0] if "/" in repository and ("." in repository.split("/", 1)[0]
                                                                     or ":" in repository.split("/", 1)[0]) else ""
    docker = {"author": document.get("author"), "created": document.get("created"),
              "appc.io/docker/originalname": image.reference.text,
              "appc.io/docker/registryurl": registry,
              "appc.io/docker/repository": repository[len(registry) + 1:] if registry else repository,
              "appc.io/docker/tag": tag,
              "appc.io/docker/imageid": image.config_digest,
              "appc.io/docker/manifesthash": image.digest,
              "appc.io/docker/entrypoint": json.dumps(entrypoint) if entrypoint else None,
              "appc.io/docker/cmd": json.dumps(cmd) if cmd else None}
    annotations.update({k: str(v) for k, v in docker.items() if isinstance(v, str) and v})
    return {"acKind": "ImageManifest", "acVersion": AC_VERSION, "name": name, "labels": labels, "app": app,
            "annotations": [{"name": k, "value": v} for k, v in annotations.items()]}
