"""An app image's annotations (edge: reads /opt/stage2/<app>/manifest when the image has one).

Read for every app, whether or not the pod manifest overrides the image's `app`: annotations such
as `appc.io/executor/supports-systemd-notify` describe the image itself. An image manifest that
cannot be read or parsed gives no annotations here; load_image_apps reports it when it matters.
"""

from .files import read_text
from .manifest import load_json
from .mounts import image_manifest_path
from .problems import InvalidInput

NOTIFY = "appc.io/executor/supports-systemd-notify"
DOCKER_REPOSITORY = "appc.io/docker/repository"  # the image was converted from Docker (docker2aci)


def image_annotations(root: str, app_name: str) -> dict[str, str]:
    path = image_manifest_path(app_name)
    try:
        # Read as every guest file is (pod/files.py: a FIFO or /dev/zero there is refused, not read).
        text = read_text(root + path, path)
        document = load_json(text, path) if text is not None else None
    except InvalidInput:
        return {}
    annotations = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(annotations, list):
        return {}
    return {a["name"]: a["value"] for a in annotations
            if isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("value"), str)}
