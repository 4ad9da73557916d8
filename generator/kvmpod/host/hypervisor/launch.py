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


def children_import_this_kvmpod(environ=os.environ) -> None:
    """kvmpod's own children are `python3 -m kvmpod…` (the hypervisor's supervisor, a pod's transient
    unit on a systemd host): make them import the kvmpod this process runs, wherever it is installed.
    Its directory goes first on PYTHONPATH unless Python's site already puts it on every path (/usr,
    a virtualenv); the launcher of a copy unpacked elsewhere (`<prefix>/bin/kvmpod`) finds it itself."""
    import site

    import kvmpod

    root = os.path.dirname(os.path.dirname(os.path.abspath(kvmpod.__file__)))
    if root in site.getsitepackages() or root == site.getusersitepackages():
        return
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def launch_environment(hypervisor: str) -> dict[str, str]:
    """The transient unit's environment: the PYTHONPATH of children_import_this_kvmpod (a supervised
    hypervisor runs kvmpod's supervisor). lkvm keeps its control socket in $HOME/.lkvm and fails to
    start without a HOME ("bind: No such file or directory"), which a unit without User= lacks."""
    environment = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    if hypervisor == "lkvm":
        from .argv import LKVM_HOME

        environment["HOME"] = LKVM_HOME
    return environment


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
