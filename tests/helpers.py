"""Small builders shared by the host tests: pods come from the real manifest parser."""

from kvmpod.pod.manifest import parse_pod_manifest
from kvmpod.pod.model import Pod

UUID = "6733c3e4-5a57-4ac6-8e2a-5d8f6a6c1d2e"


def pod(volumes: list[dict], apps: list[dict] | None = None) -> Pod:
    return parse_pod_manifest({"acKind": "PodManifest", "acVersion": "0.8.11",
                               "apps": apps or [], "volumes": volumes})


def host(name: str, source: str, **extra) -> dict:
    return {"name": name, "kind": "host", "source": source, **extra}


def empty(name: str) -> dict:
    return {"name": name, "kind": "empty"}
