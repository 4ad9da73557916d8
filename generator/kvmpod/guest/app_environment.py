"""The filesystem an app sees around its rootfs (pure): rkt 1.30's prepare-app, with systemd 252's
own sandboxing settings doing what prepare-app did by hand.

Under RootDirectory= an app sees only its image unless systemd mounts more:
- /proc, /sys and a fresh /run (MountAPIVFS=yes; also implied by ProtectKernelTunables=yes);
- a minimal /dev: null, zero, full, random, urandom, tty, ptmx, pts, shm, mqueue and the stdio
  links, no disks (PrivateDevices=yes; systemd then also drops CAP_MKNOD and CAP_SYS_RAWIO);
- a /tmp and /var/tmp of its own, removed when it stops (PrivateTmp=yes);
- the kernel's tunables read-only: all of /sys, /proc/sys, /proc/sysrq-trigger, /proc/bus, ...
  (ProtectKernelTunables=yes, which covers rkt's protectKernelROPaths), /sys/fs/cgroup read-only
  (ProtectControlGroups=yes), module loading and the kernel log refused (ProtectKernelModules=,
  ProtectKernelLogs=);
- rkt's protectKernelHiddenDirs and protectKernelHiddenPaths made inaccessible, except /sys/fs:
  rkt hid it, kvmpod leaves /sys/fs/cgroup visible (read-only) so that an app can read its own
  limits (JVMs and Go programs size themselves from it).
ReadOnlyPaths=, ReadWritePaths= and InaccessiblePaths= name paths as the guest sees them, not
inside RootDirectory= (systemd.exec(5); a boot showed /sys/module still listed with the path
written app-relative), so they are written with the app's rootfs in front, as rkt did
(relAppPaths); BindReadOnlyPaths= destinations are inside the root.
"""

# rkt's protectKernelHiddenPaths and protectKernelHiddenDirs, less /sys/fs (see above).
HIDDEN_PATHS = ("/proc/config.gz", "/proc/kallsyms", "/proc/sched_debug", "/proc/kcore", "/proc/kmem", "/proc/mem",
                "/sys/firmware", "/sys/hypervisor", "/sys/module", "/sys/power", "/sys/fs/bpf", "/sys/fs/pstore")
# The guest's name-service files an app of a pod with networks gets when its image has none
# (rkt's dns_config.go bound the pod's /etc/rkt-hosts and /etc/rkt-resolv.conf the same way).
NAME_SERVICE_FILES = ("/etc/hosts", "/etc/resolv.conf")


def environment_settings(rootfs: str, image_files: frozenset[str], has_networks: bool, read_only_rootfs: bool,
                         writable_mounts: tuple[str, ...]) -> list[tuple[str, str]]:
    """[Service] settings for an app whose rootfs (at `rootfs` in the guest) holds `image_files`
    (of NAME_SERVICE_FILES) and whose read-write mounts are at `writable_mounts` (inside the app)."""
    settings = [
        ("MountAPIVFS", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        # "-": a path this kernel does not have is no error.
        ("InaccessiblePaths", " ".join("-" + path_word(rootfs + p) for p in HIDDEN_PATHS)),
    ]
    if has_networks:
        # "-": a guest without the file gives the app none; a file the image ships is the image's.
        settings += [("BindReadOnlyPaths", f"-{path}:{path}") for path in NAME_SERVICE_FILES
                     if path not in image_files]
    if read_only_rootfs:
        # The whole root read-only, then each read-write volume writable again (rkt: ReadOnlyDirectories=
        # on the rootfs, ReadWriteDirectories= on every mount that is not read-only). /tmp, /dev, /proc
        # are systemd's own mounts and keep their modes.
        settings.append(("ReadOnlyPaths", path_word(rootfs)))
        settings += [("ReadWritePaths", path_word(rootfs + path)) for path in writable_mounts]
    return settings


def path_word(path: str) -> str:
    """A path as one word of a systemd path list (ReadWritePaths= splits on white space, unquotes)."""
    if not any(c in path for c in " \t\"'\\"):
        return path
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
