"""The validated pod: what manifest.py hands to both the guest generator and the host helper.

Everything here has been checked; the rest of the code trusts it.
"""

from .frozen import frozen

# "host" or "empty". A plain str: typing.Literal would import typing, ~4 ms of every boot.
VolumeKind = str

DEFAULT_EMPTY_MODE = 0o755


@frozen
class Volume:
    name: str
    kind: VolumeKind
    source: str | None = None  # host volumes only: an absolute host path
    read_only: bool | None = None  # None: not said, the mount point decides
    recursive: bool | None = None  # None: not said, rbind (rkt's default)
    mode: int = DEFAULT_EMPTY_MODE  # empty volumes only
    uid: int = 0
    gid: int = 0


@frozen
class MountPoint:
    """An image's declared mount point (apps[].app.mountPoints[] or the image manifest's)."""

    name: str
    path: str
    read_only: bool = False


@frozen
class Mount:
    """apps[].mounts[]: the pod's binding of a volume to a path in one app."""

    volume: str
    path: str
    app_volume: Volume | None = None  # appVolume: overrides the pod volume of that name


@frozen
class Isolator:
    name: str
    value: object  # kept as parsed JSON; only consumers that understand a name interpret it


@frozen
class EnvironmentVariable:
    name: str
    value: str


@frozen
class AppSection:
    """The `app` object of an image manifest (or of apps[] in the pod manifest, which overrides it)."""

    exec: tuple[str, ...] = ()
    user: str = "0"
    group: str = "0"
    working_directory: str | None = None
    environment: tuple[EnvironmentVariable, ...] = ()
    mount_points: tuple[MountPoint, ...] = ()
    isolators: tuple[Isolator, ...] = ()


@frozen
class App:
    name: str
    image_name: str | None
    app: AppSection | None  # None: not in the pod manifest, read the image manifest
    mounts: tuple[Mount, ...] = ()


@frozen
class Pod:
    apps: tuple[App, ...]
    volumes: tuple[Volume, ...] = ()
    isolators: tuple[Isolator, ...] = ()

    def volume(self, name: str) -> Volume | None:
        for volume in self.volumes:
            if volume.name == name:
                return volume
        return None

    @property
    def host_volumes(self) -> tuple[Volume, ...]:
        return tuple(v for v in self.volumes if v.kind == "host")
