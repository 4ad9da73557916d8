"""`kvmpod run`: start the hypervisor. Under systemd, as a transient service in machine.slice
(pystemd), so the VM is supervised, accounted and stoppable like any machine; elsewhere by exec."""

import os
import shutil
from collections.abc import Sequence

SYSTEMD_RUNTIME_DIR = "/run/systemd/system"  # sd_booted(3): exists only when systemd is PID 1
MACHINE_SLICE = "machine.slice"


def host_runs_systemd() -> bool:
    return os.path.isdir(SYSTEMD_RUNTIME_DIR)


def vm_unit_name(pod_uuid: str) -> str:
    return f"kvmpod-{pod_uuid}.service"


def launch_environment(hypervisor: str) -> dict[str, str]:
    """The transient unit's environment. lkvm keeps its control socket in $HOME/.lkvm and fails to
    start without a HOME ("bind: No such file or directory"), which a unit without User= lacks."""
    if hypervisor == "lkvm":
        from .argv import LKVM_HOME

        return {"HOME": LKVM_HOME}
    return {}


def start_transient_service(argv: Sequence[str], pod_uuid: str, environment: dict[str, str] | None = None) -> str:
    """Start argv as `kvmpod-<uuid>.service` in machine.slice; return the unit's name."""
    try:
        # pystemd replaces its module pystemd.run by the function run() (sys.modules trick), so
        # `from pystemd.run import run` fails; take whichever of the two this version gives.
        import importlib

        run_module = importlib.import_module("pystemd.run")
        run = getattr(run_module, "run", run_module)
    except ImportError:
        raise RuntimeError("this host runs systemd but pystemd is not installed; install kvmpod[systemd] "
                           "(pip) or python3-pystemd (apt), or pass --no-systemd") from None
    # systemd runs ExecStart= by absolute path; resolve the hypervisor here, on our PATH, as exec would.
    binary = shutil.which(argv[0])
    if binary is None:
        raise RuntimeError(f"{argv[0]} is not on PATH; install the hypervisor")
    name = vm_unit_name(pod_uuid)
    run([os.fsencode(a) for a in [os.path.abspath(binary), *argv[1:]]], name=name.encode(),
        slice_=MACHINE_SLICE.encode(), service_type=b"simple", collect=True, env=environment or None)
    return name


def exec_hypervisor(argv: Sequence[str]) -> None:
    """Replace this process with the hypervisor (never returns)."""
    os.execvp(argv[0], list(argv))
