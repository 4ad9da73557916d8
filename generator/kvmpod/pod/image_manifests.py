"""Read the image manifests of apps whose pod entry has no `app` (edge: reads the guest tree)."""

from .files import read_text
from .manifest import load_json, parse_image_app
from .model import Pod
from .mounts import ImageApp, image_manifest_path
from .problems import InvalidInput, Problem


def load_image_apps(pod: Pod, root: str, *, required: bool = True) -> dict[str, ImageApp]:
    """{app name: its image's app} for apps the pod manifest leaves to their image.

    `root` is where the guest tree is ("" for /). A missing manifest is a problem when `required`
    (the generator, which must know every mount point) and is skipped otherwise (host-side
    resource sums, which fall back to what the pod manifest says).
    """
    found: dict[str, ImageApp] = {}
    problems: list[Problem] = []
    for i, app in enumerate(pod.apps):
        if app.app is not None:
            continue
        path = image_manifest_path(app.name)
        try:
            text = read_text(root + path, path)
        except InvalidInput as error:
            if required:
                problems.extend(error.problems)
            continue
        if text is None:
            if required:
                problems.append(Problem(f"apps[{i}].app", f"is not given and the image manifest {path} cannot "
                                                          "be read (No such file or directory); "
                                                          f"add \"app\" to apps[{i}] or install the image"))
            continue
        try:
            found[app.name] = ImageApp(path, parse_image_app(load_json(text, path), path))
        except InvalidInput as error:
            problems.extend(error.problems)
    if problems:
        raise InvalidInput(problems)
    return found
