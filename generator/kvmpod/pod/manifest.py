"""Parse and validate appc manifests (PodManifest, ImageManifest's `app`) into the model.

Validation follows the appc schema where kvmpod depends on it, reports every problem it finds
(each naming its JSON field and the fix), and ignores fields it does not know, as appc says.
"""

from . import json_reader as json  # json.loads and JSONDecodeError without importing re (~10 ms a boot)

from .model import (
    DEFAULT_EMPTY_MODE,
    App,
    AppSection,
    EnvironmentVariable,
    EventHandler,
    ExposedPort,
    Isolator,
    Mount,
    MountPoint,
    Pod,
    Port,
    Volume,
)
from .ids import ID_HINT, is_valid_id, parse_id
from .limits import MAX_APP_NAME_BYTES, MAX_VOLUME_NAME_BYTES, path_problem, program_problem
from .names import is_ac_name
from .problems import InvalidInput, Problem

_AC_NAME_HINT = "use lowercase letters, digits and single dashes, e.g. \"db-data\""


class _Checker:
    """Collects problems while walking a JSON document; `prefix` names the file when useful."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.problems: list[Problem] = []

    def report(self, field: str, message: str) -> None:
        self.problems.append(Problem(self.prefix + field, message))

    def obj(self, value: object, field: str) -> dict | None:
        if isinstance(value, dict):
            return value
        self.report(field, f"must be a JSON object, not {_json_type(value)}")
        return None

    def array(self, parent: dict, key: str, field: str) -> list:
        value = parent.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.report(field, f"must be a JSON array, not {_json_type(value)}")
        return []

    def string(self, parent: dict, key: str, field: str, *, required: bool, hint: str = "") -> str | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.report(field, "is required" + (f"; {hint}" if hint else ""))
            return None
        if not isinstance(value, str):
            self.report(field, f"must be a string, not {_json_type(value)}")
            return None
        return value

    def boolean(self, parent: dict, key: str, field: str) -> bool | None:
        value = parent.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.report(field, f"must be true or false, not {_json_type(value)}")
        return None

    def ac_name(self, parent: dict, key: str, field: str, max_bytes: int = MAX_VOLUME_NAME_BYTES) -> str | None:
        name = self.string(parent, key, field, required=True, hint=_AC_NAME_HINT)
        if name is not None and not is_ac_name(name):
            self.report(field, f"{name!r} is not an AC Name; {_AC_NAME_HINT}")
            return None
        if name is not None and len(name) > max_bytes:
            self.report(field, f"is {len(name)} characters long; kvmpod takes at most {max_bytes} (its unit and "
                               "file names must fit systemd's 255 bytes); choose a shorter name")
            return None
        return name

    def absolute_path(self, parent: dict, key: str, field: str, *, required: bool) -> str | None:
        path = self.string(parent, key, field, required=required, hint="give an absolute path")
        if path is None:
            return None
        if not path.startswith("/"):
            self.report(field, f"{path!r} is not absolute; give a path starting with \"/\"")
            return None
        if (problem := path_problem(path)) is not None:
            self.report(field, f"{path!r:.200} {problem}")
            return None
        return path

    def unsigned(self, parent: dict, key: str, field: str, default: int) -> int:
        value = parent.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.report(field, f"must be a non-negative integer, not {value!r:.40}")
            return default
        return value

    def ident(self, parent: dict, key: str, field: str) -> int:
        """An empty volume's uid or gid: a number systemd and chown accept."""
        value = self.unsigned(parent, key, field, 0)
        if not is_valid_id(value):
            self.report(field, f"{str(value):.40} is out of range; {ID_HINT}")
            return 0
        return value

    def user_or_group(self, parent: dict, key: str, field: str, hint: str) -> str | None:
        """appc's user/group: required and non-empty (empty must not silently mean root); a number
        must be one systemd accepts (User=4294967296 is fatal to the unit)."""
        value = self.string(parent, key, field, required=True, hint=hint)
        if value is None:
            return None
        if not value:
            self.report(field, f"is empty; give {hint}")
            return None
        if value.isascii() and value.isdigit() and parse_id(value) is None:
            self.report(field, f"{value:.40} is out of range; {ID_HINT}")
            return None
        if not value.isprintable() or value != value.strip() or len(value) > 4096:
            self.report(field, f"{value!r:.60} is not a user, group or path; give {hint}")
            return None
        return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


# No manifest nests this deep; json.loads would recurse once per level (RecursionError, and noise
# from freeing a half-built deep tree), so a deeper document is refused before it is parsed.
MAX_JSON_DEPTH = 100


def load_json(text: str, source: str) -> object:
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _json_depth(text) > MAX_JSON_DEPTH:
        raise InvalidInput([Problem(source, f"is nested more than {MAX_JSON_DEPTH} levels deep, which no manifest "
                                            "needs; fix the JSON")])
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput([Problem(source, f"is not valid JSON: {error.msg} at line {error.lineno} "
                                            f"column {error.colno}; fix the syntax")]) from None
    except RecursionError:
        raise InvalidInput([Problem(source, "is nested too deeply to be a manifest; fix the JSON")]) from None
    except ValueError as error:  # Python's int digit limit: a number of thousands of digits
        raise InvalidInput([Problem(source, f"is not valid JSON here ({str(error).split(';')[0]}); "
                                            "fix the number")]) from None
    if "\\u" in text and (where := _lone_surrogate(document)) is not None:
        raise InvalidInput([Problem(f"{source}: {where}" if where else source,
                                    "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is no "
                                    "character and cannot be written as UTF-8; fix the string")])
    return document


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _lone_surrogate(document: object) -> str | None:
    """The JSON field of the first string (key or value) holding a lone surrogate, iteratively."""
    pending: list[tuple[object, str]] = [(document, "")]
    while pending:
        value, field = pending.pop()
        if isinstance(value, str):
            if any("\ud800" <= c <= "\udfff" for c in value):
                return field
        elif isinstance(value, list):
            pending.extend((item, f"{field}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if any("\ud800" <= c <= "\udfff" for c in key):
                    return field or "(a key)"
                pending.append((item, f"{field}.{key}" if field else key))
    return None


def parse_pod_manifest(document: object) -> Pod:
    """A PodManifest (already JSON-decoded) as a Pod, or InvalidInput with every problem."""
    check = _Checker()
    root = _document(check, document, "PodManifest")
    version = check.string(root, "acVersion", "acVersion", required=True, hint='e.g. "0.8.11"')
    if version is not None and not version.startswith("0."):
        check.report("acVersion", f"is {version!r}; kvmpod reads appc 0.x manifests (e.g. \"0.8.11\")")
    if "apps" not in root:
        check.report("apps", 'is required; list the pod\'s apps ("apps": [] for none)')

    volumes = [
        v for i, raw in enumerate(check.array(root, "volumes", "volumes"))
        if (v := _volume(check, raw, f"volumes[{i}]")) is not None
    ]
    _refuse_duplicates(check, [v.name for v in volumes], "volumes", "volume")
    # Names as written, valid or not: a mount naming a volume that failed its own checks is not
    # also reported as naming no volume.
    declared = {raw["name"] for raw in check.array(root, "volumes", "volumes")
                if isinstance(raw, dict) and isinstance(raw.get("name"), str)}
    apps = [
        a for i, raw in enumerate(check.array(root, "apps", "apps"))
        if (a := _app(check, raw, f"apps[{i}]", declared)) is not None
    ]
    _refuse_duplicates(check, [a.name for a in apps], "apps", "app")
    isolators = _isolators(check, root, "isolators")
    ports = _exposed_ports(check, root, "ports")
    annotations = _annotations(check, root, "annotations")
    if check.problems:
        raise InvalidInput(check.problems)
    return Pod(apps=tuple(apps), volumes=tuple(volumes), isolators=isolators, ports=ports, annotations=annotations)


# kvmpod's own pod annotation: "guest" binds the guest's /etc/hosts and /etc/resolv.conf into every
# app of a pod with networks even over the image's own (rkt's --dns=host, --hosts-entry=host);
# "image" (the default) only into apps whose image ships none.
NAME_SERVICE_FILES = "kvmpod.io/name-service-files"


def _annotations(check: _Checker, obj: dict, field: str) -> tuple[tuple[str, str], ...]:
    found = []
    for k, raw in enumerate(check.array(obj, "annotations", field)):
        annotation = check.obj(raw, f"{field}[{k}]")
        if annotation is None:
            continue
        name = check.string(annotation, "name", f"{field}[{k}].name", required=True)
        value = check.string(annotation, "value", f"{field}[{k}].value", required=True)
        if name == NAME_SERVICE_FILES and value not in (None, "guest", "image"):
            check.report(f"{field}[{k}].value", f'is {value!r}; use "guest" (the guest\'s files over the image\'s) '
                                                'or "image" (the default)')
        elif name is not None and value is not None:
            found.append((name, value))
    return tuple(found)


def parse_image_app(document: object, source: str) -> AppSection | None:
    """The `app` of an ImageManifest read from `source`; None when the image has no app."""
    check = _Checker(prefix=f"{source}: ")
    root = _document(check, document, "ImageManifest")
    section = None
    if root.get("app") is not None:
        section = _app_section(check, root["app"], "app")
    if check.problems:
        raise InvalidInput(check.problems)
    return section


def _document(check: _Checker, document: object, ac_kind: str) -> dict:
    """The top-level object, its acKind checked; a document that is no object at all stops here."""
    root = check.obj(document, f"({ac_kind})")
    if root is None:
        raise InvalidInput(check.problems)
    kind = check.string(root, "acKind", "acKind", required=True, hint=f'set it to "{ac_kind}"')
    if kind is not None and kind != ac_kind:
        check.report("acKind", f'is {kind!r}; this file must have "acKind": "{ac_kind}"')
    return root


def _refuse_duplicates(check: _Checker, names: list[str], field: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            check.report(field, f"two {what}s are named {name!r}; {what} names must be unique")
        seen.add(name)


def _volume(check: _Checker, raw: object, field: str) -> Volume | None:
    obj = check.obj(raw, field)
    if obj is None:
        return None
    problems_before = len(check.problems)
    name = check.ac_name(obj, "name", f"{field}.name")
    kind = check.string(obj, "kind", f"{field}.kind", required=True, hint='"host" or "empty"')
    read_only = check.boolean(obj, "readOnly", f"{field}.readOnly")
    recursive = check.boolean(obj, "recursive", f"{field}.recursive")
    if kind == "host":
        source = check.absolute_path(obj, "source", f"{field}.source", required=True)
        for key in ("mode", "uid", "gid"):
            if key in obj:
                check.report(f"{field}.{key}", f"only empty volumes take {key}; remove it, "
                                                "the host directory's own ownership applies")
        volume = Volume(name or "", "host", source=source, read_only=read_only, recursive=recursive)
    elif kind == "empty":
        if "source" in obj:
            check.report(f"{field}.source", "an empty volume has no source; remove it or use \"kind\": \"host\"")
        mode = _mode(check, obj, f"{field}.mode")
        uid = check.ident(obj, "uid", f"{field}.uid")
        gid = check.ident(obj, "gid", f"{field}.gid")
        volume = Volume(name or "", "empty", read_only=read_only, recursive=recursive, mode=mode, uid=uid, gid=gid)
    else:
        if kind is not None:
            check.report(f"{field}.kind", f'is {kind!r}; use "host" or "empty"')
        return None
    return volume if len(check.problems) == problems_before else None


def _mode(check: _Checker, obj: dict, field: str) -> int:
    mode = check.string(obj, "mode", field, required=False)
    if mode is None:
        return DEFAULT_EMPTY_MODE
    if not mode or len(mode) > 4 or any(c not in "01234567" for c in mode):
        check.report(field, f'{mode!r} is not an octal mode; write it like "0755"')
        return DEFAULT_EMPTY_MODE
    return int(mode, 8)


def _app(check: _Checker, raw: object, field: str, declared_volumes: set) -> App | None:
    obj = check.obj(raw, field)
    if obj is None:
        return None
    problems_before = len(check.problems)
    name = check.ac_name(obj, "name", f"{field}.name", MAX_APP_NAME_BYTES)
    image = obj.get("image")
    image_name = None
    if image is not None and (image_obj := check.obj(image, f"{field}.image")) is not None:
        image_name = check.string(image_obj, "name", f"{field}.image.name", required=False)
    section = None
    if obj.get("app") is not None:
        section = _app_section(check, obj["app"], f"{field}.app")
    mounts = tuple(
        m for j, raw_mount in enumerate(check.array(obj, "mounts", f"{field}.mounts"))
        if (m := _mount(check, raw_mount, f"{field}.mounts[{j}]", declared_volumes)) is not None
    )
    app_volumes: dict[str, Volume] = {}
    for j, mount in enumerate(mounts):
        if mount.app_volume is not None:
            if app_volumes.setdefault(mount.volume, mount.app_volume) != mount.app_volume:
                check.report(f"{field}.mounts[{j}].appVolume", f"differs from an earlier appVolume named "
                                                               f"{mount.volume!r} in this app; make them identical")
    read_only_rootfs = check.boolean(obj, "readOnlyRootFS", f"{field}.readOnlyRootFS")
    if len(check.problems) != problems_before or name is None:
        return None
    return App(name=name, image_name=image_name, app=section, mounts=mounts, read_only_rootfs=bool(read_only_rootfs))


def _mount(check: _Checker, raw: object, field: str, declared_volumes: set) -> Mount | None:
    obj = check.obj(raw, field)
    if obj is None:
        return None
    volume = check.ac_name(obj, "volume", f"{field}.volume")
    if isinstance(obj.get("path"), str) and obj["path"] and not obj["path"].startswith("/"):
        # `rkt run --mount volume=v,target=dir1` writes "dir1": relative to the app's root.
        obj = dict(obj, path="/" + obj["path"])
    path = check.absolute_path(obj, "path", f"{field}.path", required=True)
    app_volume = None
    if obj.get("appVolume") is not None:
        app_volume = _volume(check, obj["appVolume"], f"{field}.appVolume")
        if app_volume is not None and volume is not None and app_volume.name != volume:
            check.report(f"{field}.appVolume.name", f"is {app_volume.name!r} but the mount names volume "
                                                     f"{volume!r}; make them the same")
            return None
        if app_volume is None:
            return None
    elif volume is not None and volume not in declared_volumes:
        check.report(f"{field}.volume", f"no volume named {volume!r}; add it to volumes[] or give the "
                                        "mount an appVolume")
        return None
    if volume is None or path is None:
        return None
    return Mount(volume=volume, path=path, app_volume=app_volume)


def _app_section(check: _Checker, raw: object, field: str) -> AppSection | None:
    obj = check.obj(raw, field)
    if obj is None:
        return None
    problems_before = len(check.problems)
    exec_ = check.array(obj, "exec", f"{field}.exec")
    for k, arg in enumerate(exec_):
        if not isinstance(arg, str):
            check.report(f"{field}.exec[{k}]", f"must be a string, not {_json_type(arg)}")
        elif "\0" in arg:
            check.report(f"{field}.exec[{k}]", "contains NUL, which no program argument can hold; remove it")
    if exec_ and exec_[0] == "":
        check.report(f"{field}.exec[0]", "is empty; give the program's path in the image, or its name on the "
                                         "app's PATH")
    elif exec_ and isinstance(exec_[0], str) and "\0" not in exec_[0]:
        problem = program_problem(exec_[0])
        if problem is not None:
            check.report(f"{field}.exec[0]", f"{exec_[0]!r:.300} {problem}")
    user = check.user_or_group(obj, "user", f"{field}.user", 'a uid or user name, "0" for root')
    group = check.user_or_group(obj, "group", f"{field}.group", 'a gid or group name, "0" for root')
    working_directory = check.absolute_path(obj, "workingDirectory", f"{field}.workingDirectory", required=False)
    environment = []
    for k, raw_env in enumerate(check.array(obj, "environment", f"{field}.environment")):
        env = check.obj(raw_env, f"{field}.environment[{k}]")
        if env is None:
            continue
        env_name = check.string(env, "name", f"{field}.environment[{k}].name", required=True)
        env_value = check.string(env, "value", f"{field}.environment[{k}].value", required=True)
        if env_name is not None and not _is_environment_name(env_name):
            # appc's rule (schema/types/environment.go): ^[A-Za-z_][A-Za-z_0-9.-]*$
            check.report(f"{field}.environment[{k}].name", f"{env_name!r} is not a variable name; start with a "
                                                           "letter or underscore, then letters, digits, _ . or -")
        elif env_name is not None and any(e.name == env_name for e in environment):
            check.report(f"{field}.environment[{k}].name", f"{env_name!r} is set twice; keep one")
        elif env_name is not None and env_value is not None:
            if "\0" in env_value:
                check.report(f"{field}.environment[{k}].value", "contains a NUL, which no environment can carry")
            environment.append(EnvironmentVariable(env_name, env_value))
    mount_points = []
    for k, raw_mp in enumerate(check.array(obj, "mountPoints", f"{field}.mountPoints")):
        mp_field = f"{field}.mountPoints[{k}]"
        mp = check.obj(raw_mp, mp_field)
        if mp is None:
            continue
        mp_name = check.ac_name(mp, "name", f"{mp_field}.name")
        mp_path = check.absolute_path(mp, "path", f"{mp_field}.path", required=True)
        mp_read_only = check.boolean(mp, "readOnly", f"{mp_field}.readOnly")
        if mp_name is not None and mp_path is not None:
            mount_points.append(MountPoint(mp_name, mp_path, bool(mp_read_only)))
    _refuse_duplicates(check, [mp.name for mp in mount_points], f"{field}.mountPoints", "mount point")
    isolators = _isolators(check, obj, f"{field}.isolators")
    event_handlers = _event_handlers(check, obj, f"{field}.eventHandlers")
    ports = _ports(check, obj, f"{field}.ports")
    supplementary_gids = []
    for k, gid in enumerate(check.array(obj, "supplementaryGIDs", f"{field}.supplementaryGIDs")):
        if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid < 4294967295:
            check.report(f"{field}.supplementaryGIDs[{k}]", f"must be a non-negative integer gid below 4294967295, "
                                                             f"not {gid!r}")
        else:
            supplementary_gids.append(gid)
    if len(check.problems) != problems_before:
        return None
    return AppSection(
        exec=tuple(exec_),
        user=user or "0",
        group=group or "0",
        working_directory=working_directory,
        environment=tuple(environment),
        mount_points=tuple(mount_points),
        isolators=isolators,
        supplementary_gids=tuple(supplementary_gids),
        event_handlers=event_handlers,
        ports=ports,
    )


def _port_number(check: _Checker, obj: dict, key: str, field: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        check.report(field, f"must be a port number from 1 to 65535, not {value!r}")
        return None
    return value


def _ports(check: _Checker, obj: dict, field: str) -> tuple[Port, ...]:
    """An app's ports[] (appc Port: name, protocol, port, count, socketActivated)."""
    ports = []
    for k, raw in enumerate(check.array(obj, "ports", field)):
        port = check.obj(raw, f"{field}[{k}]")
        if port is None:
            continue
        problems_before = len(check.problems)
        name = check.ac_name(port, "name", f"{field}[{k}].name")
        protocol = check.string(port, "protocol", f"{field}[{k}].protocol", required=True, hint='"tcp" or "udp"')
        if protocol is not None and protocol not in ("tcp", "udp"):
            check.report(f"{field}[{k}].protocol", f'is {protocol!r}; kvmpod serves "tcp" and "udp"')
        number = _port_number(check, port, "port", f"{field}[{k}].port")
        count = check.unsigned(port, "count", f"{field}[{k}].count", 1) or 1
        if number is not None and number + count > 65536:
            check.report(f"{field}[{k}].count", f"ports {number}..{number + count - 1} end past 65535; lower the count")
        activated = check.boolean(port, "socketActivated", f"{field}[{k}].socketActivated")
        if len(check.problems) == problems_before and name and protocol and number:
            ports.append(Port(name, protocol, number, count, bool(activated)))
    _refuse_duplicates(check, [p.name for p in ports], field, "port")
    return tuple(ports)


def _exposed_ports(check: _Checker, obj: dict, field: str) -> tuple[ExposedPort, ...]:
    """The pod's ports[]: which host port an app port is reached on."""
    exposed = []
    for k, raw in enumerate(check.array(obj, "ports", field)):
        port = check.obj(raw, f"{field}[{k}]")
        if port is None:
            continue
        name = check.ac_name(port, "name", f"{field}[{k}].name")
        host_port = _port_number(check, port, "hostPort", f"{field}[{k}].hostPort")
        if name and host_port:
            exposed.append(ExposedPort(name, host_port))
    _refuse_duplicates(check, [p.name for p in exposed], field, "port")
    return tuple(exposed)


_ENV_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ENV_REST = _ENV_FIRST | frozenset("0123456789.-")


def _is_environment_name(name: str) -> bool:
    return bool(name) and name[0] in _ENV_FIRST and _ENV_REST.issuperset(name)


def _event_handlers(check: _Checker, obj: dict, field: str) -> tuple[EventHandler, ...]:
    """appc's pre-start and post-stop handlers, at most one of each (TestAppEventHandlersInvalid)."""
    handlers: list[EventHandler] = []
    for k, raw in enumerate(check.array(obj, "eventHandlers", field)):
        handler = check.obj(raw, f"{field}[{k}]")
        if handler is None:
            continue
        name = check.string(handler, "name", f"{field}[{k}].name", required=True, hint='"pre-start" or "post-stop"')
        if name is not None and name not in ("pre-start", "post-stop"):
            check.report(f"{field}[{k}].name", f'is {name!r}; use "pre-start" or "post-stop"')
            name = None
        elif name is not None and any(h.name == name for h in handlers):
            check.report(f"{field}[{k}].name", f"a second {name!r} handler; give one and put both commands in it")
            name = None
        exec_ = check.array(handler, "exec", f"{field}[{k}].exec")
        if not exec_ or not all(isinstance(w, str) for w in exec_) or not exec_[0].startswith("/"):
            check.report(f"{field}[{k}].exec", 'must be a command as an array of strings starting with an absolute '
                                               'path, e.g. ["/bin/migrate", "--up"]')
            continue
        problem = program_problem(exec_[0]) if "\0" not in exec_[0] else None
        if problem is not None:
            check.report(f"{field}[{k}].exec[0]", f"{exec_[0]!r:.300} {problem}")
            continue
        if name is not None:
            handlers.append(EventHandler(name, tuple(exec_)))
    return tuple(handlers)


def _isolators(check: _Checker, obj: dict, field: str) -> tuple[Isolator, ...]:
    isolators = []
    for k, raw in enumerate(check.array(obj, "isolators", field)):
        iso = check.obj(raw, f"{field}[{k}]")
        if iso is None:
            continue
        name = check.string(iso, "name", f"{field}[{k}].name", required=True, hint='e.g. "resource/memory"')
        if name is not None:
            isolators.append(Isolator(name, iso.get("value")))
    return tuple(isolators)
