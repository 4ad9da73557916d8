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
class Port:
    """An app's ports[] entry (appc ImageManifest)."""

    name: str
    protocol: str  # "tcp" or "udp"
    port: int
    count: int = 1
    socket_activated: bool = False


@frozen
class ExposedPort:
    """The pod manifest's ports[]: an app port by name, on a host port."""

    name: str
    host_port: int


@frozen
class EventHandler:
    """eventHandlers[]: "pre-start" runs before the app, "post-stop" after it, in its root."""

    name: str
    exec: tuple[str, ...]


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
    supplementary_gids: tuple[int, ...] = ()  # supplementaryGIDs
    event_handlers: tuple[EventHandler, ...] = ()
    ports: tuple[Port, ...] = ()


@frozen
class App:
    name: str
    image_name: str | None
    app: AppSection | None  # None: not in the pod manifest, read the image manifest
    mounts: tuple[Mount, ...] = ()
    read_only_rootfs: bool = False  # readOnlyRootFS


@frozen
class AppIsolators:
    """An app's isolators as systemd settings take them (pod/isolators.py reads them; rkt's
    appSystemdUnit and getAppCapabilities decided the defaults)."""

    memory_max: int | None = None  # bytes: resource/memory limit
    cpu_quota_percent: int | None = None  # resource/cpu limit in millicores / 10
    cpu_weight: int | None = None  # os/linux/cpu-shares, as systemd converts shares to a weight
    oom_score_adjust: int | None = None  # os/linux/oom-score-adj
    capabilities: tuple[str, ...] = ()  # the bounding set
    no_new_privileges: bool = False
    seccomp_mode: str = "deny"  # "deny" (a remove set), "allow" (a retain set) or "off" (@appc.io/all)
    seccomp_set: tuple[str, ...] = ()  # syscall names and systemd @groups
    seccomp_errno: str = ""  # "": a blocked call kills the app with SIGSYS


@frozen
class Pod:
    apps: tuple[App, ...]
    volumes: tuple[Volume, ...] = ()
    isolators: tuple[Isolator, ...] = ()
    ports: tuple[ExposedPort, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()  # (name, value) as in the manifest

    def annotation(self, name: str) -> str | None:
        return next((value for key, value in self.annotations if key == name), None)

    def volume(self, name: str) -> Volume | None:
        for volume in self.volumes:
            if volume.name == name:
                return volume
        return None

    @property
    def host_volumes(self) -> tuple[Volume, ...]:
        return tuple(v for v in self.volumes if v.kind == "host")
