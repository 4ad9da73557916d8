"""`kvmpod logs UUID [--app NAME] [--follow]`: the apps' output kept in the pod directory.

apps.log holds the lines as the guest's journald sent them, in rkt's format ("[  12.345678]
app[42]: line"); once it reached its cap, the older part is apps.log.1 (host.pods.capped_log). This
prints apps.log.1 then apps.log, only NAME's lines with --app, and with --follow keeps printing what
kvmpod run adds (across a rotation) until the pod is no longer running.
"""

import os
import time

from ...pod.problems import InvalidInput, Problem
from .app_output import app_line_name
from .capped_log import MAX_LINE, ROTATED_SUFFIX, LineSplitter
from .pod_dirs import PodDir, is_running, manifest_apps, read_state

FOLLOW_POLL_SECONDS = 0.2
READ_CHUNK = 256 * 1024


def check_logs(pod: PodDir, app: str | None) -> None:
    if not os.path.isdir(pod.path):
        raise InvalidInput([Problem("UUID", f"no pod {pod.uuid} in {os.path.dirname(pod.path)}; see kvmpod list")])
    if app is not None:
        apps = read_state(pod).get("apps") or manifest_apps(pod)
        if app not in apps:
            raise InvalidInput([Problem("--app", f"{app!r} is not an app of pod {pod.uuid} "
                                                 f"(its apps: {', '.join(apps)})")])


class _Tail:
    """Follows one log file that kvmpod run may rotate (rename to .1, start anew)."""

    def __init__(self, path: str):
        self.path = path
        self.file = None
        self.inode = None

    def _open(self) -> bool:
        try:
            self.file = open(self.path, "rb")
        except FileNotFoundError:
            return False
        self.inode = os.fstat(self.file.fileno()).st_ino
        return True

    def read(self) -> bytes:
        if self.file is None and not self._open():
            return b""
        data = self.file.read(READ_CHUNK)
        if data:
            return data
        try:
            rotated = os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            rotated = True
        if rotated:  # what we hold is now .1: its rest was read above; go on with the new file
            self.file.close()
            self.file = None
            return self.read() if self._open() else b""
        return b""


def _emit(lines: list[str], app: str | None, write) -> None:
    for line in lines:
        if app is None or app_line_name(line) == app:
            write(line + "\n")


def show_logs(pod: PodDir, app: str | None, follow: bool, write, flush=lambda: None) -> int:
    check_logs(pod, app)
    splitter = LineSplitter(MAX_LINE)
    rotated = pod.apps_log + ROTATED_SUFFIX
    try:
        with open(rotated, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                _emit(splitter.feed(chunk), app, write)
    except FileNotFoundError:
        pass
    tail = _Tail(pod.apps_log)
    while True:
        running = follow and is_running(pod)
        while chunk := tail.read():
            _emit(splitter.feed(chunk), app, write)
        flush()
        if not running:
            break
        time.sleep(FOLLOW_POLL_SECONDS)
    _emit(splitter.flush(), app, write)
    flush()
    return 0
