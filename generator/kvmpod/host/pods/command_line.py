"""`kvmpod run [POD FLAGS] IMAGE [APP FLAGS] [-- ARGS...] [--- IMAGE ...]`: the pod manifest from
rkt's command line, as rkt's stage0 made it (rkt/cli_apps.go parseApps, stage0/run.go
generatePodManifest, stage0/common.go generateRuntimeApp).

Pure apart from reading --set-env-file files: the images arrive already resolved (`ImageInfo`: the
name, the path `kvmpod run` installs, the image manifest document); the result is the manifest
document, its parsed `Pod` (through manifest.parse_pod_manifest, as a --manifest one) and each app's
image. Every problem names the flag it came from (`--volume data: ...`, `--mount (app web): ...`)
and says what to do; nothing is written.

What rkt did and kvmpod does too:
- pod flags come before the first image; app flags after their image; `--` starts the app's
  arguments, `---` ends them (rkt's parseApps);
- each app gets a copy of its image's `app` (exec, user, group, environment, mount points, ports,
  isolators...) with the flags applied: `--exec CMD` replaces the command, arguments after `--` are
  appended to it, `--memory`/`--cpu` set resource/memory and resource/cpu ({"request": V,
  "limit": V}, as rkt's NewResourceMemoryIsolator(V, V));
- an app is named after its image (rkt's ImageNameToAppName: the last `/` component, lower-cased,
  every other character than a-z, 0-9 and `-` made `-`, `-` trimmed at the ends), here without the
  `:TAG`/`@DIGEST` of a container reference (`example.com/web:1.0` -> `web`);
- `--mount` before the first image applies to every app (rkt's pod-level mounts).
Decisions where rkt was silent or surprising: an app's own --set-env wins over the pod's (rkt's
help said so, its code did the reverse); an app's --mount wins over a pod-level one on the same
target; --memory/--cpu replace an isolator of that name from the image (rkt appended a second); a
relative --volume source is taken from the current directory.
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ...pod.files import read_text
from ...pod.limits import MAX_APP_NAME_BYTES
from ...pod.manifest import parse_pod_manifest
from ...pod.model import Pod
from ...pod.names import is_ac_name
from ...pod.problems import InvalidInput, Problem
from ...pod.quantity import parse_quantity

AC_VERSION = "0.8.11"
MIN_MEMORY_BYTES = 4096  # rkt: "--memory=16m" (milli-bytes) is a mistake, not a limit

# App flags that take a value, and their meaning; --readonly-rootfs takes none (or =true/=false).
APP_VALUE_FLAGS = {
    "--name": "the app's name (default: from the image's name)",
    "--exec": "the command, replacing the image's",
    "--set-env": "NAME=VALUE for this app (also --environment, rkt's name)",
    "--environment": "NAME=VALUE for this app (rkt's name for --set-env)",
    "--user": "the user (name or uid) the app runs as",
    "--group": "the group (name or gid) the app runs as",
    "--working-dir": "the app's working directory",
    "--mount": "volume=NAME,target=PATH",
    "--memory": "the app's memory limit (resource/memory), e.g. 256M",
    "--cpu": "the app's CPU limit (resource/cpu), e.g. 500m",
}
APP_BOOL_FLAGS = ("--readonly-rootfs",)
# Pod flags kvmpod run takes before the first image: named when one is given after an image.
POD_FLAGS = ("--volume", "--uuid", "--hostname", "--set-env-file", "--cpus", "--net", "--port", "--dns",
             "--manifest", "--app", "--hypervisor", "--stage1", "--keep")

_AC_NAME_HINT = "lower-case letters, digits and '-', starting and ending with a letter or digit"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9.-]*\Z")
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, which rkt used
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class ImageInfo:
    """One image of the command line, resolved by the caller (host.images)."""

    reference: str  # as typed
    name: str  # the image's name, for the app's default name and apps[].image.name
    path: str  # what kvmpod run installs as the app's rootfs (a directory or an .aci)
    manifest: dict | None  # the image manifest document; None: a bare rootfs directory
    image_id: str | None = None  # apps[].image.id when known (the store's digest)


@dataclass
class AppLine:
    """One IMAGE [APP FLAGS] [-- ARGS...] of the command line."""

    image: str
    flags: list[tuple[str, str]] = field(default_factory=list)  # (flag, value) in order
    args: list[str] | None = None


@dataclass(frozen=True)
class PodFlags:
    """The pod flags that go into the manifest. Flags that only decide how the pod is booted
    (--memory, --cpus, --uuid, networking) stay with kvmpod run."""

    volumes: tuple[str, ...] = ()
    set_env: tuple[str, ...] = ()
    set_env_files: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()  # --mount before the first image: every app
    annotations: tuple[tuple[str, str], ...] = ()  # the pod manifest's, for flags that need one
    cwd: str = "/"  # relative --volume sources are taken from here


@dataclass(frozen=True)
class BuiltPod:
    document: dict
    pod: Pod
    images: dict[str, str]  # app name -> the path kvmpod run installs
    infos: dict[str, ImageInfo] = field(default_factory=dict)  # IMAGE word -> what it resolved to


# ---------------------------------------------------------------- argv -> app lines

def split_apps(words: list[str]) -> list[AppLine]:
    """The IMAGE [APP FLAGS] [-- ARGS...] [--- ...] part of the command line, as rkt's parseApps."""
    apps: list[AppLine] = []
    problems: list[Problem] = []
    in_args = False
    after_separator = False  # after ---: an image must come next
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if in_args:
            if word == "---":
                in_args, after_separator = False, True
            else:
                apps[-1].args.append(word)  # type: ignore[union-attr]
            continue
        if word == "--":
            if not apps or after_separator:
                problems.append(Problem("--", "an image must come before its arguments: kvmpod run IMAGE -- ARGS"))
                break
            if apps[-1].args is not None:
                problems.append(Problem("--", f"image {apps[-1].image}: only one set of arguments per image; "
                                              "end them with --- before the next image"))
                break
            apps[-1].args = []
            in_args = True
            continue
        if word == "---":
            after_separator = True  # rkt ignored a --- outside arguments; it separates images here too
            continue
        if word.startswith("-"):
            flag, eq, value = word.partition("=")
            if not apps or after_separator:
                where = "before the first image" if not apps else "right after ---"
                problems.append(Problem(flag, f"is an app flag and comes after its image, not {where}: "
                                              "kvmpod run [POD FLAGS] IMAGE [APP FLAGS]"
                                        if flag in APP_VALUE_FLAGS or flag in APP_BOOL_FLAGS else
                                        f"is not a flag kvmpod run knows {where}; see kvmpod run --help"))
                break
            if flag in APP_BOOL_FLAGS:
                if eq and value not in _GO_TRUE + _GO_FALSE:
                    problems.append(Problem(flag, f"(image {apps[-1].image}) takes no value, or =true/=false, not "
                                                  f"{value!r}"))
                    continue
                apps[-1].flags.append((flag, "false" if value in _GO_FALSE and eq else "true"))
                continue
            if flag not in APP_VALUE_FLAGS:
                if flag in POD_FLAGS or flag in ("--memory", "--cpus"):
                    hint = "is a pod flag: put it before the first image"
                else:
                    hint = f"is not an app flag; app flags: {', '.join(sorted(APP_VALUE_FLAGS) + list(APP_BOOL_FLAGS))}"
                problems.append(Problem(flag, f"(after image {apps[-1].image}) {hint}"))
                continue
            if not eq:
                if i >= len(words) or words[i] in ("--", "---"):
                    problems.append(Problem(flag, f"(image {apps[-1].image}) needs a value: "
                                                  f"{APP_VALUE_FLAGS[flag]}"))
                    continue
                value = words[i]
                i += 1
            apps[-1].flags.append((flag, value))
            continue
        if not word:
            problems.append(Problem("IMAGE", "is empty; give an image: oci:PATH, oci-archive:PATH, "
                                             "docker-archive:PATH, an .aci or a directory"))
            continue
        apps.append(AppLine(word))
        after_separator = False
    if problems:
        raise InvalidInput(problems)
    return apps


# ---------------------------------------------------------------- app names

def image_name_to_app_name(name: str) -> str | None:
    """rkt's common.ImageNameToAppName with appc's SanitizeACName, a container reference's :TAG and
    @DIGEST dropped first; None when nothing valid is left."""
    last = name.rstrip("/").split("/")[-1]
    last = last.split("@", 1)[0].split(":", 1)[0]
    sanitized = re.sub(r"^-+|-+$", "", re.sub(r"[^a-z0-9-]", "-", last.lower()))
    return sanitized or None


# ---------------------------------------------------------------- flag values

def _pairs(text: str, flag: str, problems: list[Problem]) -> dict[str, str] | None:
    """KEY=VALUE,KEY=VALUE (appc's VolumeFromString and rkt's --mount syntax), each key once."""
    found: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key:
            problems.append(Problem(flag, f"{part!r} is not KEY=VALUE (a value cannot hold a comma)"))
            return None
        if key in found:
            problems.append(Problem(flag, f"{key} is given twice; give it once"))
            return None
        found[key] = value
    return found


def _go_bool(value: str, flag: str, key: str, problems: list[Problem]) -> bool | None:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    problems.append(Problem(flag, f"{key}={value!r} is not a boolean; give {key}=true or {key}=false"))
    return None


def parse_volume(text: str, cwd: str, problems: list[Problem]) -> dict | None:
    """--volume NAME,kind=host,source=PATH[,readOnly=true][,recursive=false] or
    NAME,kind=empty[,mode=0755][,uid=N][,gid=N][,readOnly=...]: a pod manifest volume."""
    name, _, rest = text.partition(",")
    flag = f"--volume {name}" if name else "--volume"
    before = len(problems)
    if not is_ac_name(name):
        problems.append(Problem("--volume", f"{text!r}: the volume's name comes first and {name!r} is not an AC "
                                            f"Name ({_AC_NAME_HINT}); e.g. --volume data,kind=host,source=/srv/data"))
        return None
    pairs = _pairs(rest, flag, problems) if rest else {}
    if pairs is None:
        return None
    kind = pairs.pop("kind", None)
    volume: dict = {"name": name, "kind": kind}
    if kind == "host":
        allowed = ("source", "readOnly", "recursive")
        source = pairs.get("source")
        if not source:
            problems.append(Problem(flag, "a host volume needs source=PATH, the host directory it shares"))
        else:
            volume["source"] = os.path.normpath(os.path.join(cwd, source))
            if not os.path.isdir(volume["source"]):
                problems.append(Problem(flag, f"source {volume['source']!r} is not a directory on this host; create "
                                              f"it or fix the path"))
    elif kind == "empty":
        allowed = ("mode", "uid", "gid", "readOnly", "recursive")
        if "mode" in pairs:
            mode = pairs["mode"]
            if not mode or len(mode) > 4 or any(c not in "01234567" for c in mode):
                problems.append(Problem(flag, f"mode={mode!r} is not an octal mode; write it like mode=0755"))
            volume["mode"] = mode
        for key in ("uid", "gid"):
            if key in pairs:
                value = pairs[key]
                if not (value.isascii() and value.isdigit()) or int(value) >= 4294967295:
                    problems.append(Problem(flag, f"{key}={value!r} is not a number; give {key}=N (0 for root)"))
                else:
                    volume[key] = int(value)
    else:
        problems.append(Problem(flag, ("needs kind=host (with source=PATH) or kind=empty"
                                       if kind is None else f"kind={kind!r}: use kind=host or kind=empty")))
        return None
    for key in ("readOnly", "recursive"):
        if key in pairs:
            value = _go_bool(pairs[key], flag, key, problems)
            if value is not None:
                volume[key] = value
    unknown = [key for key in pairs if key not in allowed]
    if unknown:
        problems.append(Problem(flag, f"a {kind} volume takes no {', '.join(unknown)}; it takes kind, "
                                      f"{', '.join(allowed)}"))
    return volume if len(problems) == before else None


def parse_mount(text: str, flag: str, problems: list[Problem]) -> dict | None:
    """--mount volume=NAME,target=PATH: a pod manifest mount."""
    pairs = _pairs(text, flag, problems)
    if pairs is None:
        return None
    before = len(problems)
    unknown = [key for key in pairs if key not in ("volume", "target")]
    if unknown:
        problems.append(Problem(flag, f"{text!r}: unknown {', '.join(unknown)}; give volume=NAME,target=PATH"))
    for key in ("volume", "target"):
        if not pairs.get(key):
            problems.append(Problem(flag, f"{text!r} has no {key}=; give volume=NAME,target=PATH"))
    if len(problems) != before:
        return None
    return {"volume": pairs["volume"], "path": pairs["target"]}


def parse_env(text: str, flag: str, problems: list[Problem]) -> tuple[str, str] | None:
    name, eq, value = text.partition("=")
    if not eq or not _ENV_NAME.match(name):
        problems.append(Problem(flag, f"{text!r}: give NAME=VALUE, NAME a letter or _ then letters, digits, _ . -"))
        return None
    if "\0" in value:
        problems.append(Problem(flag, f"{name}: a value cannot hold a NUL"))
        return None
    return name, value


def read_env_file(path: str, problems: list[Problem]) -> list[tuple[str, str]]:
    """--set-env-file FILE, rkt's format: NAME=VALUE lines, empty and # lines skipped, each name once.
    Read as the guest reads files (pod.files): a regular file, without blocking, at most 4 MiB."""
    flag = f"--set-env-file {path}"
    try:
        text = read_text(path, flag)
    except InvalidInput as error:
        problems.extend(error.problems)
        return []
    if text is None:
        problems.append(Problem(flag, "does not exist; give a file of NAME=VALUE lines"))
        return []
    found: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.lstrip().startswith("#"):
            continue
        pair = parse_env(line, f"{flag}:{number}", problems)
        if pair is None:
            continue
        if any(name == pair[0] for name, _ in found):
            problems.append(Problem(f"{flag}:{number}", f"{pair[0]} is set twice in this file; keep one"))
            continue
        found.append(pair)
    return found


def _merge_env(environment: list[dict], pairs: list[tuple[str, str]]) -> None:
    """rkt's mergeEnvs with override: a name already there gets the new value in its place."""
    for name, value in pairs:
        for entry in environment:
            if entry.get("name") == name:
                entry["value"] = value
                break
        else:
            environment.append({"name": name, "value": value})


def _isolator(name: str, value: str, flag: str, problems: list[Problem]) -> dict | None:
    try:
        quantity = parse_quantity(value)
    except ValueError:
        problems.append(Problem(flag, f"{value!r} is not a quantity; give e.g. "
                                      + ("256M or 1Gi" if name == "resource/memory" else "500m (half a CPU) or 2")))
        return None
    if name == "resource/memory" and quantity.floor() < MIN_MEMORY_BYTES:
        problems.append(Problem(flag, f"{value!r} is {quantity.floor()} bytes, too low to be meant (m is "
                                      "milli-bytes); give e.g. 16M or 256Mi"))
        return None
    if quantity.numerator <= 0:
        problems.append(Problem(flag, f"{value!r} leaves the app nothing; give a positive limit"))
        return None
    return {"name": name, "value": {"request": value, "limit": value}}


# ---------------------------------------------------------------- the manifest

def _app_entry(line: AppLine, info: ImageInfo, pod_mounts: list[dict], pod_env: list[tuple[str, str]],
               volume_names: set[str], problems: list[Problem], origins: dict[str, str], index: int,
               app_name: str) -> dict:
    image_manifest = info.manifest or {}
    raw_app = image_manifest.get("app")
    section: dict | None = dict(raw_app) if isinstance(raw_app, dict) else None
    label = f"(app {app_name})"
    flags = dict(line.flags)  # the last of each wins, except the repeatable ones below
    if section is None and "--exec" not in flags:
        what = "is a directory without an image manifest" if info.manifest is None else "has no app section"
        problems.append(Problem(f"image {line.image}", f"{what}, so it has no command to run; give it one with "
                                                       f"--exec CMD after the image"))
        section = {}
    elif section is None:
        section = {"user": "0", "group": "0"}  # rkt made a minimal app section (the caller's ids: root here)
    here = f"apps[{index}].app"
    if "--exec" in flags:
        section["exec"] = [flags["--exec"]]
        origins[f"{here}.exec"] = f"--exec {label}"
    if line.args is not None:
        section["exec"] = list(section.get("exec") or []) + line.args
        origins.setdefault(f"{here}.exec", f"-- ARGS {label}")
    for flag, key in (("--user", "user"), ("--group", "group"), ("--working-dir", "workingDirectory")):
        if flag in flags:
            section[key] = flags[flag]
            origins[f"{here}.{key}"] = f"{flag} {label}"
    environment = [dict(e) if isinstance(e, dict) else e for e in section.get("environment") or []]
    if not isinstance(section.get("environment", []), list):
        environment = []  # the parser reports the image's own mistake
    app_env = [p for flag, value in line.flags if flag in ("--set-env", "--environment")
               if (p := parse_env(value, f"{flag} {label}", problems)) is not None]
    if pod_env or app_env:
        _merge_env(environment, pod_env)
        _merge_env(environment, app_env)  # the app's own wins over the pod's
        section["environment"] = environment
        origins[f"{here}.environment"] = f"--set-env {label}"
    isolators = list(section.get("isolators") or []) if isinstance(section.get("isolators", []), list) else []
    for flag, name in (("--memory", "resource/memory"), ("--cpu", "resource/cpu")):
        if flag in flags:
            isolator = _isolator(name, flags[flag], f"{flag} {label}", problems)
            if isolator is not None:
                isolators = [i for i in isolators if not (isinstance(i, dict) and i.get("name") == name)]
                isolators.append(isolator)
                section["isolators"] = isolators
                origins[f"{here}.isolators"] = f"--memory/--cpu {label}"
    mounts: list[dict] = []
    app_mounts = [m for value in (v for f, v in line.flags if f == "--mount")
                  if (m := parse_mount(value, f"--mount {label}", problems)) is not None]
    targets = {os.path.normpath("/" + m["path"]) for m in app_mounts}
    for j, mount in enumerate(m for m in pod_mounts if os.path.normpath("/" + m["path"]) not in targets):
        mounts.append(mount)
        origins[f"apps[{index}].mounts[{len(mounts) - 1}]"] = "--mount (before the first image)"
    seen: set[str] = set()
    for mount in app_mounts:
        target = os.path.normpath("/" + mount["path"])
        if target in seen:
            problems.append(Problem(f"--mount {label}", f"two mounts target {mount['path']!r}; keep one"))
            continue
        seen.add(target)
        mounts.append(mount)
        origins[f"apps[{index}].mounts[{len(mounts) - 1}]"] = f"--mount {label}"
    for mount in mounts:
        if mount["volume"] not in volume_names:
            which = origins[f"apps[{index}].mounts[{mounts.index(mount)}]"]
            problems.append(Problem(which, f"volume={mount['volume']}: no such volume; add --volume "
                                           f"{mount['volume']},kind=host,source=PATH (or kind=empty) before the "
                                           f"first image"))
    entry: dict = {"name": app_name, "image": {"name": info.name}}
    if info.image_id:
        entry["image"]["id"] = info.image_id
    labels = image_manifest.get("labels")
    if isinstance(labels, list) and labels:
        entry["image"]["labels"] = labels
    entry["app"] = section
    if mounts:
        entry["mounts"] = mounts
    if flags.get("--readonly-rootfs") == "true":
        entry["readOnlyRootFS"] = True
    return entry


def _app_names(apps: list[AppLine], infos: dict[str, ImageInfo], problems: list[Problem]) -> list[str]:
    names: list[str] = []
    taken: dict[str, str] = {}
    for line in apps:
        given = dict(line.flags).get("--name")
        if given is not None:
            name = given
            if not is_ac_name(given):
                problems.append(Problem(f"--name {given}", f"(image {line.image}) is not an AC Name; use "
                                                           f"{_AC_NAME_HINT}"))
            elif len(given) > MAX_APP_NAME_BYTES:
                problems.append(Problem(f"--name {given[:20]}...", f"is {len(given)} characters long; kvmpod "
                                                                   f"takes at most {MAX_APP_NAME_BYTES}"))
        else:
            derived = image_name_to_app_name(infos[line.image].name)
            name = (derived or "")[:MAX_APP_NAME_BYTES].rstrip("-")
            if not name:
                problems.append(Problem(f"image {line.image}", f"its name {infos[line.image].name!r} gives no app "
                                                               "name; give one with --name NAME after the image"))
        if name and name in taken:
            problems.append(Problem(f"image {line.image}", f"its app would be named {name!r}, as the app of image "
                                                           f"{taken[name]}; app names are unique in a pod: give one "
                                                           f"of them --name NAME"))
        taken.setdefault(name, line.image)
        names.append(name)
    return names


def _translate(problems: list[Problem], origins: dict[str, str]) -> list[Problem]:
    """The manifest parser's problems, each under the flag that made the field."""
    translated = []
    for problem in problems:
        best = ""
        for prefix in origins:
            if (problem.field == prefix or problem.field.startswith(prefix + ".")
                    or problem.field.startswith(prefix + "[")) and len(prefix) > len(best):
                best = prefix
        if not best:
            translated.append(Problem(f"kvmpod run ({problem.field})", problem.message))
            continue
        rest = problem.field[len(best):].lstrip(".")
        translated.append(Problem(origins[best], f"{rest}: {problem.message}" if rest else problem.message))
    return translated


def build_pod(flags: PodFlags, apps: list[AppLine], infos: dict[str, ImageInfo]) -> BuiltPod:
    """The pod manifest for the command line, validated as a --manifest one; InvalidInput naming
    the flags otherwise."""
    problems: list[Problem] = []
    if not apps:
        raise InvalidInput([Problem("IMAGE", "give at least one image (kvmpod run [POD FLAGS] IMAGE [APP FLAGS] "
                                             "[-- ARGS] [--- IMAGE ...]), or --manifest POD with --app NAME=IMAGE")])
    origins: dict[str, str] = {}
    volumes: list[dict] = []
    for text in flags.volumes:
        volume = parse_volume(text, flags.cwd, problems)
        if volume is None:
            continue
        if any(v["name"] == volume["name"] for v in volumes):
            problems.append(Problem(f"--volume {volume['name']}", "is given twice; volume names are unique"))
            continue
        origins[f"volumes[{len(volumes)}]"] = f"--volume {volume['name']}"
        volumes.append(volume)
    pod_env: list[tuple[str, str]] = []
    for path in flags.set_env_files:
        _merge_env_pairs(pod_env, read_env_file(path, problems))
    _merge_env_pairs(pod_env, [p for text in flags.set_env if (p := parse_env(text, "--set-env", problems))])
    pod_mounts = [m for text in flags.mounts if (m := parse_mount(text, "--mount", problems)) is not None]
    names = _app_names(apps, infos, problems)
    volume_names = {v["name"] for v in volumes}
    entries = []
    images: dict[str, str] = {}
    for index, (line, name) in enumerate(zip(apps, names)):
        info = infos[line.image]
        origins[f"apps[{index}]"] = f"image {line.image} (app {name})"
        origins[f"apps[{index}].name"] = f"--name (image {line.image})"
        entries.append(_app_entry(line, info, pod_mounts, pod_env, volume_names, problems, origins, index, name))
        images[name] = info.path
    if problems:
        raise InvalidInput(problems)
    document: dict = {"acKind": "PodManifest", "acVersion": AC_VERSION, "apps": entries}
    if volumes:
        document["volumes"] = volumes
    if flags.annotations:
        document["annotations"] = [{"name": k, "value": v} for k, v in flags.annotations]
    try:
        pod = parse_pod_manifest(document)
    except InvalidInput as error:
        raise InvalidInput(_translate(error.problems, origins)) from None
    return BuiltPod(document, pod, images, dict(infos))


def _merge_env_pairs(into: list[tuple[str, str]], pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        into[:] = [(n, v) for n, v in into if n != name] + [(name, value)]


def resolve_and_build(flags: PodFlags, words: list[str], resolve: Callable[[str], ImageInfo]) -> BuiltPod:
    """split_apps, each distinct image resolved once by `resolve` (problems of all gathered), build_pod."""
    apps = split_apps(words)
    infos: dict[str, ImageInfo] = {}
    problems: list[Problem] = []
    tried: set[str] = set()
    for line in apps:
        if line.image in tried:
            continue
        tried.add(line.image)
        try:
            infos[line.image] = resolve(line.image)
        except InvalidInput as error:
            problems.extend(error.problems)
    if problems:
        raise InvalidInput(problems)
    return build_pod(flags, apps, infos)
