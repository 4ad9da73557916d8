"""Where each volume is staged in the guest, shared by the host helper and the generator.

Every volume a pod uses is staged once at `/mnt/<stage name>` (9p for host volumes, a plain
directory for empty ones) and bind-mounted from there into the apps.
"""

from .frozen import frozen

from .model import Pod, Volume
from .limits import stage_name_problem
from .names import ninep_tag
from .problems import InvalidInput, Problem

STAGE_DIR = "/mnt"


@frozen
class StagedVolume:
    stage_name: str  # the pod volume's name; "<app>.<volume>" for an appVolume that differs
    volume: Volume

    @property
    def guest_path(self) -> str:
        return f"{STAGE_DIR}/{self.stage_name}"

    @property
    def tag(self) -> str:
        return ninep_tag(self.stage_name)


def app_volume_stage_name(app_name: str, volume_name: str) -> str:
    # "." is not allowed in AC Names, so this cannot collide with a pod volume or an implicit one.
    return f"{app_name}.{volume_name}"


def staged_volumes(pod: Pod) -> tuple[StagedVolume, ...]:
    """Pod volumes in manifest order, then each appVolume that is not just a copy of its pod volume."""
    staged = {v.name: StagedVolume(v.name, v) for v in pod.volumes}
    problems = []
    for i, app in enumerate(pod.apps):
        for j, mount in enumerate(app.mounts):
            if mount.app_volume is not None and mount.app_volume != pod.volume(mount.volume):
                name = app_volume_stage_name(app.name, mount.volume)
                if (problem := stage_name_problem(name)) is not None:
                    problems.append(Problem(f"apps[{i}].mounts[{j}].appVolume.name", problem))
                staged.setdefault(name, StagedVolume(name, mount.app_volume))
    if problems:
        raise InvalidInput(problems)
    return tuple(staged.values())


def staged_host_volumes(pod: Pod) -> tuple[StagedVolume, ...]:
    """What the host must export over 9p, in manifest order."""
    return tuple(s for s in staged_volumes(pod) if s.volume.kind == "host")
