"""A child that dies with the process that started it (prctl PR_SET_PDEATHSIG, SIGKILL).

Given as `preexec_fn` to what kvmpod must never leave running on its own: the VM and a pod root's
copy under `kvmpod run` (pods/pod_root.py, run.py), the hypervisor and virtiofsd under the volume
supervisor (hypervisor/supervisor.py), the base image's copy while a stage1 builds (images/stage1.py).
When the parent is killed (SIGKILL: no handler runs), the kernel kills the child too, so nothing
goes on running or writing unwatched.

The signal comes when the parent *thread* that forked the child ends; kvmpod starts these from its
main thread, which lives as long as the process.
"""

import signal

from .libc import check, libc

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies. As a preexec_fn, in the child before exec.

    A prctl that fails raises OSError: in a preexec_fn subprocess then raises SubprocessError in the
    parent and the program never runs (unwatched)."""
    check(libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
