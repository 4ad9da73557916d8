"""Room kept free in a pod directory for what kvmpod must still write when the pod ends.

A file system that fills up while a pod runs (the pod's logs, its root's upper dir, anything else on
the disk of the state directory) must not cost the pod its end: the apps' exit records the
supervisor copies out of the capped share, and state.json with the pod's status. So `kvmpod run`
writes two files of zeros (real blocks, not a sparse file) while preparing the pod:

- `<pod>/share/.reserve`: room for the apps' records (RECORD_ROOM per app). The supervisor mounts
  the capped tmpfs over <pod>/share, so the guest never sees it; the supervisor removes it (through
  its descriptor of the directory underneath) just before it copies the records out.
- `<pod>/.reserve`: room for state.json (STATE_ROOM); `kvmpod run` removes it just before it writes
  the pod's end.

A disk already too full for them is the "no space left while preparing" error: nothing of the pod
is kept. Removing a file that is gone already is no error.
"""

import os

NAME = ".reserve"
RECORD_ROOM = 8 * 1024  # a record is at most 4 KiB (share_reader.MAX_RECORD_BYTES), plus its temp file
STATE_ROOM = 64 * 1024  # state.json is about 1-2 KiB; written under a temporary name, then renamed


def reserve(directory: str, size: int) -> None:
    """Write `size` bytes of zeros to `directory`/.reserve (OSError, ENOSPC included, to the caller)."""
    fd = os.open(os.path.join(directory, NAME), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        block = bytes(min(size, 64 * 1024))
        left = size
        while left > 0:
            left -= os.write(fd, block[:left])
        os.fsync(fd)
    finally:
        os.close(fd)


def release(directory: str | None = None, *, dir_fd: int | None = None) -> None:
    """Remove the reserve of `directory` (or of the directory open as `dir_fd`), if there is one."""
    try:
        if dir_fd is not None:
            os.unlink(NAME, dir_fd=dir_fd)
        else:
            os.unlink(os.path.join(directory, NAME))
    except FileNotFoundError:
        pass
    except OSError:
        pass  # nothing to free then; the writes after it say what failed
