"""The app fields issue 10 added to the manifest parser: each read into the model, each bad value
one problem naming its field."""

import pytest

from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.model import EventHandler, ExposedPort, Port
from kvmpod.pod.problems import InvalidInput


def pod(app: dict | None = None, **extra) -> dict:
    section = {"exec": ["/bin/a"], "user": "0", "group": "0", **(app or {})}
    entry = {"name": "a", "app": section, **extra.pop("entry", {})}
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [entry], **extra}


def problems(document: dict) -> list[str]:
    with pytest.raises(InvalidInput) as error:
        parse_pod_manifest(document)
    return [str(p) for p in error.value.problems]


def test_new_fields_are_read():
    parsed = parse_pod_manifest(pod(
        {"exec": ["server", "x"], "supplementaryGIDs": [4, 27],
         "eventHandlers": [{"name": "post-stop", "exec": ["/bin/c"]}, {"name": "pre-start", "exec": ["/bin/p", "1"]}],
         "ports": [{"name": "http", "protocol": "tcp", "port": 80, "socketActivated": True}],
         "environment": [{"name": "my.var-1", "value": "v"}]},
        entry={"readOnlyRootFS": True, "mounts": [{"volume": "v", "path": "dir1/sub"}]},
        volumes=[{"name": "v", "kind": "empty"}], ports=[{"name": "http", "hostPort": 8080}],
        annotations=[{"name": "kvmpod.io/name-service-files", "value": "guest"}]))
    app = parsed.apps[0]
    assert app.read_only_rootfs is True and app.mounts[0].path == "/dir1/sub"
    assert app.app.exec == ("server", "x") and app.app.supplementary_gids == (4, 27)
    assert app.app.event_handlers == (EventHandler("post-stop", ("/bin/c",)), EventHandler("pre-start", ("/bin/p", "1")))
    assert app.app.ports == (Port("http", "tcp", 80, 1, True),)
    assert app.app.environment[0].name == "my.var-1"
    assert parsed.ports == (ExposedPort("http", 8080),)
    assert parsed.annotation("kvmpod.io/name-service-files") == "guest"


@pytest.mark.parametrize("document,expected", [
    (pod({"supplementaryGIDs": [4, -1]}), "apps[0].app.supplementaryGIDs[1]: must be a non-negative integer gid"),
    (pod(entry={"readOnlyRootFS": "yes"}), "apps[0].readOnlyRootFS: must be true or false"),
    (pod({"exec": [""]}), "apps[0].app.exec[0]: is empty"),
    (pod({"environment": [{"name": "9x", "value": ""}]}), "apps[0].app.environment[0].name: '9x' is not a variable name"),
    (pod({"environment": [{"name": "x", "value": "a\0b"}]}), "apps[0].app.environment[0].value: contains a NUL"),
    (pod({"eventHandlers": [{"name": "", "exec": ["/bin/x"]}]}), "apps[0].app.eventHandlers[0].name: is ''"),
    (pod({"ports": [{"name": "p", "protocol": "tcp", "port": 80, "socketActivated": 1}]}),
     "apps[0].app.ports[0].socketActivated: must be true or false"),
    (pod(ports=[{"name": "p"}]), "ports[0].hostPort: must be a port number from 1 to 65535, not None"),
])
def test_bad_values_name_their_field(document, expected):
    found = problems(document)
    assert len(found) == 1 and found[0].startswith(expected), found
