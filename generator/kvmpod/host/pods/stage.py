"""Put the pod manifest (and the network description) into the stage1 rootfs, where the guest
generator reads them: /etc/kvmpod/pod.json and /etc/kvmpod/networks.json.

The rootfs is the guest's tree and may hold symlinks the guest made: `etc` or `etc/kvmpod`
pointing at the host's /etc must not make the host write there. Every directory is opened with
O_NOFOLLOW relative to its parent, and each file is written under a temporary name and renamed,
so the guest never sees half a file.
"""

import json
import os

from ...pod.guest_paths import DEFAULT_MANIFEST, GUEST_CONFIG_DIR, NETWORKS_PATH
from ...pod.problems import InvalidInput, Problem

GUEST_DIR = GUEST_CONFIG_DIR


def _open_dir(parent_fd: int, name: str, field: str) -> int:
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as error:
        raise InvalidInput([Problem(field, f"cannot open {name!r} as a real directory in the rootfs "
                                           f"({error.strerror}); a symlink there is refused")]) from None


def _write(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".{name}.kvmpod-tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def stage_pod(rootfs: str, manifest: bytes, networks: list[dict] | None = None) -> list[str]:
    """Write the (already validated) manifest, and the guest network description if any, into
    `rootfs`; returns the host paths written. A stale networks.json is removed when there are none."""
    written = []
    try:
        root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise InvalidInput([Problem("--rootfs", f"{rootfs!r}: {error.strerror}; give the stage1 rootfs "
                                                f"directory")]) from None
    fds = [root_fd]
    try:
        for part in GUEST_DIR.strip("/").split("/"):
            fds.append(_open_dir(fds[-1], part, "--rootfs"))
        dir_fd = fds[-1]
        _write(dir_fd, os.path.basename(DEFAULT_MANIFEST), manifest)
        written.append(os.path.join(rootfs, DEFAULT_MANIFEST.lstrip("/")))
        networks_name = os.path.basename(NETWORKS_PATH)
        if networks:
            _write(dir_fd, networks_name, (json.dumps(networks, indent=2) + "\n").encode())
            written.append(os.path.join(rootfs, NETWORKS_PATH.lstrip("/")))
        else:
            try:
                os.unlink(networks_name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    except OSError as error:
        raise InvalidInput([Problem("--rootfs", f"cannot write into {rootfs!r}: {error}")]) from None
    finally:
        for fd in reversed(fds):
            os.close(fd)
    return written


def stage_etc_files(rootfs: str, apps: list[str], guest_files: dict[str, bytes], app_files: dict[str, bytes],
                    stage2_dir: str) -> list[str]:
    """Write `guest_files` into the guest root's /etc and `app_files` into every app's rootfs /etc
    (/etc/resolv.conf, /etc/hosts, /etc/hostname from kvmpod run's --dns and --hostname), never
    through a symlink the image holds: each directory opened with O_NOFOLLOW, each file renamed into
    place (a symlink at the file's name is replaced, not followed)."""
    written = []
    targets = [([], guest_files)] + [(stage2_dir.strip("/").split("/") + [app, "rootfs"], app_files) for app in apps]
    for parts, files in targets:
        if not files:
            continue
        fds = [os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for part in parts + ["etc"]:
                fds.append(_open_dir(fds[-1], part, "--dns/--hostname"))
            for name, data in files.items():
                _write(fds[-1], name, data)
                written.append(os.path.join(rootfs, *parts, "etc", name))
        finally:
            for fd in reversed(fds):
                os.close(fd)
    return written
