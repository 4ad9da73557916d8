"""What rkt 1.30 did for images converted from Docker (annotation appc.io/docker/repository;
imported only for such images):

- Group fallback (ParseUserGroup): Docker runs a user without a group as gid = uid; docker2aci
  writes the user's name as the group too, which the image's /etc/group then lacks. When the group
  equals the user and cannot be found, the gid is the uid.
- Volume seeding (GenerateMounts, PrepareMountpoints): a mount point no pod volume fills gets an
  implicit empty volume; Docker starts such a volume with the image's files at that path, so a
  oneshot copies them in (never over what is already there) before the volume is bound.
"""

from ..pod.model import AppSection, Pod
from ..pod.mounts import STAGE2_DIR, ResolvedApp
from .app_services import Identity, exec_word
from .app_identity import lookup_id
from .mount_units import staging_unit
from .unitfile import DOCUMENTATION, GeneratedFile, Output, render_unit, requires_link
from .unitname import mount_unit_name

def docker_identity(rootfs_on_disk: str, section: AppSection) -> Identity | None:
    """gid = uid for a Docker user whose group docker2aci named after it; None when that does not apply."""
    if section.user != section.group:
        return None
    uid = lookup_id(rootfs_on_disk, section.user, "passwd")
    if uid is None or lookup_id(rootfs_on_disk, section.group, "group") is not None:
        return None
    return Identity(uid, uid)


def plan_volume_seeds(app: ResolvedApp, pod: Pod, manifest_path: str) -> list[Output]:
    """A seeding oneshot for each implicit empty volume of `app` (a Docker-converted image)."""
    declared = {v.name for v in pod.volumes}
    outputs: list[Output] = []
    for mount in app.mounts:
        staged = mount.staged
        if staged.volume.kind != "empty" or staged.stage_name in declared or ".mountPoints[" not in mount.field:
            continue
        source = f"{STAGE2_DIR}/{app.name}/rootfs{mount.target}"
        bind_unit = mount_unit_name(source)
        unit = f"kvmpod-seed-volume-{staged.stage_name}.service"
        text = render_unit([
            ("Unit", [("Description", f"kvmpod: seed volume {staged.stage_name} with {app.name}'s {mount.target}"),
                      ("Documentation", DOCUMENTATION), ("SourcePath", manifest_path),
                      # The source's parent, not the source: the volume's own bind mount is there.
                      ("DefaultDependencies", "no"), ("RequiresMountsFor", source.rsplit("/", 1)[0]),
                      ("Requires", staging_unit(staged)), ("After", staging_unit(staged)),
                      ("Before", bind_unit), ("ConditionPathIsDirectory", source),
                      ("Conflicts", "shutdown.target"), ("Before", "shutdown.target")]),
            ("Service", [("Type", "oneshot"), ("RemainAfterExit", "yes"),
                         # -n: what the volume already holds stays; "/." copies the directory's contents.
                         ("ExecStart", " ".join(["/bin/cp", "-a", "-n", exec_word(source + "/."),
                                                 exec_word(staged.guest_path + "/")]))]),
        ])
        outputs += [GeneratedFile(unit, text), requires_link(bind_unit, unit)]
    return outputs
