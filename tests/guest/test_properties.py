"""Property-based: random and mutated pod manifests on random, hostile guest trees (hypothesis).

For every case the generator must:
- return 0 or 1 and never raise (no traceback), and two runs must write byte-identical trees
  and log the same lines;
- on 1: write no unit at all, only a refusal drop-in (AssertPathExists=!/, on its own line as
  systemd reads it) for every app directory staged in /opt/stage2;
- write nothing outside the output directory (the guest tree is unchanged);
- on 0: put every bind mount's Where= inside its app's rootfs, through no symlink; and every
  ExecStart=/Environment=/WorkingDirectory= of an app service, read back as systemd parses it
  (tests/unit_syntax.py, a mirror of systemd 252's reader), equals the manifest;
- a sample of the outputs (one in KVMPOD_PROPERTY_SAMPLE=16 of the exit-0 cases, chosen by a hash of
  the manifest so a failure replays) loads in the real `systemd-analyze verify`, and its app
  services are read back by the real systemd (`systemd --test`, tests/systemd_readback.py), which
  must agree with the mirror.

Budget: KVMPOD_PROPERTY_EXAMPLES cases (default 200: about a minute on this 2-core machine, more under load); a nightly-style long
run sets it higher, e.g. KVMPOD_PROPERTY_EXAMPLES=20000. The count of cases and of each outcome is
printed at the end.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmpod.guest.generator import main
from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.names import is_ac_name
from kvmpod.pod.problems import InvalidInput
from systemd_readback import dump_units
from systemd_tools import verify_units, write_app_service
from unit_syntax import parse_unit, split_words

EXAMPLES = int(os.environ.get("KVMPOD_PROPERTY_EXAMPLES", "200"))
SAMPLE_ONE_IN = int(os.environ.get("KVMPOD_PROPERTY_SAMPLE", "16"))  # exit-0 cases checked in real systemd
REFUSAL = "50-kvmpod-invalid-manifest.conf"
STATS: Counter = Counter()

# Characters that have broken unit files, argv quoting, specifiers, JSON or UTF-8 somewhere.
HOSTILE = ["a", "b", "/", "-", ".", " ", "\t", "\n", "\r", "\x00", "\x07", "\x7f", "\\", '"', "'", "%", "$", ";",
           "=", "#", "[", "\u0085", "\u200b", "\u2028", "\ud800", "é", "😀", "${X}", "%n", "\\x41", ".."]
words = st.lists(st.sampled_from(HOSTILE), max_size=8).map("".join)
segments = st.one_of(st.sampled_from(["data", "srv", "..", ".", "a b", "x\\", "lnk", "deep", "é"]), words)
paths = st.one_of(st.lists(segments, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)), words)
names = st.one_of(st.sampled_from(["web", "db", "a", "x-1", "data", "cache", "Bad", "", "a--b", "a" * 234,
                                   "v" * 240, "kvmpod-app-ids", "kvmpod-empty-volume-data"]), words)
ids = st.one_of(st.integers(0, 70000), st.sampled_from([65535, 4294967294, 4294967295, 2 ** 63, -1]),
                st.integers())
id_strings = st.one_of(st.sampled_from(["0", "1000", "www", "", "²", "4294967296", "/etc", "65535", "root"]),
                       ids.map(str), words)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), words)
json_any = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(words, inner, max_size=3)), max_leaves=6)


def maybe(strategy):
    return st.one_of(st.nothing(), strategy)


volume = st.fixed_dictionaries(
    {"name": names, "kind": st.sampled_from(["host", "empty", "empty", "other"])},
    optional={"source": paths, "readOnly": st.booleans(), "recursive": st.booleans(),
              "mode": st.sampled_from(["0755", "0700", "1777", "999", "75"]), "uid": ids, "gid": ids})
app_section = st.fixed_dictionaries(
    {"exec": st.lists(words, min_size=1, max_size=5).map(lambda ws: ["/bin/x" + ws[0]] + ws[1:]),
     "user": id_strings, "group": id_strings},
    optional={"workingDirectory": paths,
              "environment": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["A", "B_1", "1X", "A-B", ""]),
                                                             "value": words}), max_size=3),
              "mountPoints": st.lists(st.fixed_dictionaries({"name": names, "path": paths},
                                                            optional={"readOnly": st.booleans()}), max_size=2)})
app = st.fixed_dictionaries(
    {"name": names},
    optional={"app": app_section,
              "mounts": st.lists(st.fixed_dictionaries({"volume": names, "path": paths}), max_size=3)})
manifests = st.fixed_dictionaries({"acKind": st.just("PodManifest"), "acVersion": st.just("0.8.11"),
                                   "apps": st.lists(app, max_size=3), "volumes": st.lists(volume, max_size=3)})


# Structurally valid pods whose strings are as hostile as the manifest may legally be: these reach
# the unit files, so the read-back invariants are exercised on them.
legal_words = st.lists(st.sampled_from([h for h in HOSTILE if h not in ("\x00", "\ud800")]), max_size=8).map("".join)
legal_segments = st.one_of(st.sampled_from(["data", "srv", "a b", "x\\\\", "é", "100%", "$HOME", "lnk", "deep"]),
                           st.lists(st.sampled_from(["a", "%", "$", "é", "😀", "\u200b", "\\", '"', "'", ";", " ", "="]),
                                    min_size=1, max_size=6).map("".join))
legal_paths = st.lists(legal_segments, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
ac_names = st.sampled_from(["web", "db", "a", "x-1", "cache", "data", "logs", "kvmpod-empty-volume-data"])


@st.composite
def valid_manifests(draw):
    volume_names = draw(st.lists(ac_names, max_size=3, unique=True))
    volumes = [{"name": n, "kind": "host", "source": "/srv/" + n} if draw(st.booleans()) else
               {"name": n, "kind": "empty", "mode": "0750", "uid": draw(st.integers(0, 70000)),
                "gid": draw(st.integers(0, 70000))} for n in volume_names]
    apps = []
    for name in draw(st.lists(ac_names, min_size=1, max_size=3, unique=True)):
        section = {"exec": ["/bin/" + name] + draw(st.lists(legal_words, max_size=5)),
                   "user": draw(st.sampled_from(["0", "1000", "33", "4294967294", "0", "www"])),
                   "group": draw(st.sampled_from(["0", "1000", "33", "0"])),
                   "environment": [{"name": n, "value": draw(legal_words)}
                                   for n in draw(st.lists(st.sampled_from(["A", "B_1", "_x", "PATH"]), unique=True))]}
        if draw(st.booleans()):
            section["workingDirectory"] = draw(legal_paths)
        mounts = [{"volume": v, "path": draw(legal_paths)} for v in draw(st.lists(st.sampled_from(volume_names),
                                                                                   unique=True))] if volume_names else []
        apps.append({"name": name, "app": section, "mounts": mounts})
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps, "volumes": volumes}


@st.composite
def mutated(draw, document):
    """Replace, delete or retype a few nodes anywhere in the document."""
    for _ in range(draw(st.integers(0, 3))):
        containers = []
        pending = [document]
        while pending:
            node = pending.pop()
            if isinstance(node, (list, dict)) and node:
                containers.append(node)
                pending.extend(node.values() if isinstance(node, dict) else node)
        if not containers:
            break
        node = draw(st.sampled_from(containers))
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        if draw(st.booleans()):
            node[key] = draw(json_any)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
    return document


HAZARDS = ["none", "stage2->/", "app->..", "rootfs->/etc", "inside-abs", "inside-up", "loop", "passwd-fifo",
           "guest-passwd-fifo", "app-passwd", "networks-garbage", "long-stage2-dir", "stray-file-in-stage2",
           "requires-link-in-out"]


@st.composite
def cases(draw):
    document = draw(st.one_of(valid_manifests(), manifests))
    if draw(st.integers(0, 4)) == 0:
        document = draw(mutated(document))
    text = json.dumps(document)
    if draw(st.integers(0, 20)) == 0:
        text = draw(st.sampled_from(["[" * 5000, text[: len(text) // 2], "", "\ufeff" + text, "null"]))
    listed = document.get("apps") if isinstance(document, dict) else None  # a mutation may retype anything
    app_dirs = sorted({a.get("name") for a in (listed if isinstance(listed, list) else []) if isinstance(a, dict)
                       and isinstance(a.get("name"), str) and is_ac_name(a["name"]) and len(a["name"]) < 200})
    hazards = draw(st.one_of(st.just([]), st.lists(st.sampled_from(HAZARDS), max_size=3, unique=True)))
    passwd = draw(st.lists(st.sampled_from(["www:x:33:33::/:/bin/sh", "www:x:33:33::/:/bin/sh", "root:x:0:0::/:/bin/sh", "bad:x:²:0::/:/x",
                                            "big:x:" + "9" * 50 + ":0::/:/x", "short", ":::"]), max_size=4))
    extras = {
        # Image manifests for apps whose pod entry has no "app", valid or mutated.
        "images": {name: json.dumps(draw(st.one_of(
            st.fixed_dictionaries({"acKind": st.just("ImageManifest"), "acVersion": st.just("0.8.11"),
                                   "name": st.just("example.com/x"), "app": app_section}),
            json_any))) for name in app_dirs if draw(st.booleans())},
        "networks": None if draw(st.integers(0, 3)) else json.dumps(draw(st.one_of(json_any, st.lists(
            st.fixed_dictionaries({"interface": st.sampled_from(["eth0", "eth1", "x"]),
                                   "mac": st.sampled_from(["02:00:00:00:00:01", "03:00:00:00:00:01", "zz"]),
                                   "address": st.sampled_from(["10.1.0.2/24", "10.1.0.2", "::1/64", "x"])},
                                  optional={"gateway": st.sampled_from(["10.1.0.1", "nope"]),
                                            "routes": json_any}), max_size=2)))),
    }
    return text, app_dirs, hazards, "\n".join(passwd) + "\n", extras


def build_tree(base: Path, text: str, app_dirs: list[str], hazards: list[str], passwd: str,
               extras: dict) -> tuple[Path, Path]:
    root, out = base / "root", base / "out"
    (root / "etc/kvmpod").mkdir(parents=True)
    out.mkdir()
    (root / "etc/kvmpod/pod.json").write_text(text, errors="surrogatepass")
    stage2 = root / "opt/stage2"
    stage2.mkdir(parents=True)
    for name in app_dirs:
        (stage2 / name / "rootfs" / "etc").mkdir(parents=True)
        if name in extras["images"]:
            (stage2 / name / "manifest").write_text(extras["images"][name], errors="surrogatepass")
        usual = "www:x:33:33::/:/bin/sh\n"  # the app's own user database, unless a hazard garbles it
        (stage2 / name / "rootfs/etc/passwd").write_text(passwd if "app-passwd" in hazards else usual)
        (stage2 / name / "rootfs/etc/group").write_text(passwd if "app-passwd" in hazards else usual)
        if "inside-abs" in hazards:
            (stage2 / name / "rootfs/data").symlink_to("/")
        if "inside-up" in hazards:
            (stage2 / name / "rootfs/srv").symlink_to("../../../../..")
        if "loop" in hazards:
            (stage2 / name / "rootfs/lnk").symlink_to("lnk")
    first = stage2 / app_dirs[0] if app_dirs else None
    if first is not None and "app->.." in hazards:
        shutil.rmtree(first)
        first.symlink_to("..")
    if first is not None and "rootfs->/etc" in hazards and first.is_dir() and not first.is_symlink():
        shutil.rmtree(first / "rootfs")
        (first / "rootfs").symlink_to("/etc")
    if first is not None and "passwd-fifo" in hazards and (first / "rootfs/etc").is_dir():
        (first / "rootfs/etc/passwd").unlink(missing_ok=True)
        os.mkfifo(first / "rootfs/etc/passwd")
    if "guest-passwd-fifo" in hazards:
        os.mkfifo(root / "etc/passwd")
    if extras["networks"] is not None:
        (root / "etc/kvmpod/networks.json").write_text(extras["networks"], errors="surrogatepass")
    if "networks-garbage" in hazards:
        (root / "etc/kvmpod/networks.json").write_text('[{"interface": "eth0", "mac": 1}]')
    if "long-stage2-dir" in hazards:
        (stage2 / ("l" * 246)).mkdir()
        (stage2 / ("m" * 250)).mkdir()
    if "stray-file-in-stage2" in hazards:
        (stage2 / "stray").write_text("")
    if "stage2->/" in hazards:
        shutil.rmtree(stage2)
        stage2.symlink_to("/")
    if "requires-link-in-out" in hazards and app_dirs:
        (out / f"{app_dirs[0]}.service.requires").symlink_to(base / "elsewhere")
        (base / "elsewhere").mkdir()
    return root, out


def snapshot(directory: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(top, name)
            relative = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = ("dir",)
            elif os.path.isfile(path):
                found[relative] = ("file", Path(path).read_bytes())
            else:
                found[relative] = ("other",)
    return found


def run_generator(root: Path, out: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["--root", str(root), str(out)])  # raising here fails the test: a traceback
    return status, err.getvalue()


def staged_apps(root: Path) -> list[str]:
    try:
        names = os.listdir(root / "opt/stage2")
    except OSError:
        return []
    return sorted(n for n in names if is_ac_name(n) and len(n) + len(".service.d") <= 255)


def check_refusals(root: Path, out: Path, tree: dict) -> None:
    assert not [p for p in tree if p.endswith((".mount", ".service")) and tree[p][0] != "link"], sorted(tree)
    for name in staged_apps(root):
        entry = tree.get(f"{name}.service.d/{REFUSAL}")
        assert entry is not None and entry[0] == "file", (name, sorted(tree))
        entries = parse_unit(entry[1].decode())
        assert ("Unit", "AssertPathExists", "!/") in entries, entries


def check_valid(root: Path, out: Path, tree: dict, text: str) -> None:
    pod = parse_pod_manifest(json.loads(text))
    sections = {a.name: a.app for a in pod.apps}  # None: from the image manifest, checked by verify only
    for path, entry in tree.items():
        if entry[0] != "file" or "/" in path:
            continue
        entries = parse_unit(entry[1].decode())
        where = [v for s, k, v in entries if k == "Where"]
        if where and where[0].startswith("/opt/stage2/"):
            app_name = where[0].split("/")[3]
            rootfs = f"/opt/stage2/{app_name}/rootfs"
            assert where[0].startswith(rootfs + "/"), where
            assert ".." not in where[0].split("/")
            probe = root.as_posix()
            for component in where[0].strip("/").split("/"):
                probe += "/" + component
                assert not os.path.islink(probe), (probe, where)
        if path.endswith(".service") and path[:-8] in sections and sections[path[:-8]] is not None:
            section = sections[path[:-8]]
            execs = [split_words(v) for s, k, v in entries if k == "ExecStart"]
            assert [[w.replace("$$", "$") for w in ws] for ws in execs] == [list(section.exec)]
            env = [split_words(v) for s, k, v in entries if k == "Environment"]
            assert env == [[f"AC_APP_NAME={path[:-8]}"]] + [[f"{e.name}={e.value}"] for e in section.environment]
            assert [v for s, k, v in entries if k == "WorkingDirectory"] == [section.working_directory or "/"]
            STATS["app services read back"] += 1


def check_in_systemd(out: Path, tree: dict, base: Path, text: str) -> None:
    units = sorted(out / p for p, e in tree.items() if e[0] == "file" and "/" not in p)
    if zlib.crc32(text.encode("utf-8", "surrogatepass")) % SAMPLE_ONE_IN or not units:
        return  # a deterministic sample, so that hypothesis can replay and shrink a failure
    if units:
        apps = base / "apps"
        apps.mkdir()
        stand_ins = [write_app_service(apps, p.split(".service.")[0]) for p in tree
                     if p.endswith(".service.requires") and not (out / p.split(".requires")[0]).exists()]
        result = verify_units([out, apps], units + stand_ins)
        complaints = [line for line in result.stderr.splitlines() if "is not executable" not in line]
        assert complaints == [], result.stderr
        STATS["verified by systemd-analyze"] += 1
    services = [p.name for p in units if p.name.endswith(".service") and p.name.startswith("kvmpod") is False]
    if services:
        dumped = dump_units(out, services)
        for service in services:
            entries = parse_unit((out / service).read_text())
            mirror = [split_words(v) for s, k, v in entries if k == "ExecStart"]
            assert dumped[service]["ExecStart"] == mirror, service
            env = [w for s, k, v in entries if k == "Environment" for w in split_words(v)]
            if not any("\n" in e for e in env):  # the dump prints a newline as it is: unreadable
                assert dumped[service]["Environment"] == env, service
        STATS["read back by systemd --test"] += 1


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    line = "kvmpod properties: " + ", ".join(f"{n} {k}" for k, n in sorted(STATS.items()))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + line)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(cases())
def test_generator_properties(case):
    text, app_dirs, hazards, passwd, extras = case
    STATS["cases"] += 1
    with tempfile.TemporaryDirectory(prefix="kvmpod-prop-") as tmp:
        base = Path(tmp)
        root, out = build_tree(base, text, app_dirs, hazards, passwd, extras)
        guest_before = snapshot(root)
        status, log = run_generator(root, out)
        tree = snapshot(out)
        assert status in (0, 1), log
        assert "Traceback" not in log and "internal error" not in log, log
        assert snapshot(root) == guest_before  # nothing written into the guest tree
        if (base / "elsewhere").exists():
            assert list((base / "elsewhere").iterdir()) == []
        STATS[f"exit {status}"] += 1
        if status == 1:
            check_refusals(root, out, tree)
        else:
            try:
                check_valid(root, out, tree, text)
            except InvalidInput:
                pytest.fail("exit 0 for a manifest the parser refuses")
            check_in_systemd(out, tree, base, text)
        if "requires-link-in-out" not in hazards:  # a second run, from an empty output directory too
            again = base / "again"
            again.mkdir()
            status2, log2 = run_generator(root, again)
            assert (status2, log2.replace(str(again), str(out))) == (status, log)
            assert snapshot(again) == tree
