"""Register a running pod with systemd-machined, as systemd-nspawn and systemd-vmspawn do, so that
`machinectl list` shows it and `machinectl terminate` ends it.

CreateMachine (org.freedesktop.machine1.Manager, sd-machine(3)) with the hypervisor's pid as the
leader: machined moves it into the transient scope `machine-kvmpod-<uuid>.scope` in machine.slice, so
the VM is accounted and supervised like any machine while staying kvmpod run's child (the pod's
lock, PR_SET_PDEATHSIG and the output following work unchanged). The machine is gone when the
hypervisor exits.
"""

import uuid as uuidlib

SERVICE = b"kvmpod"
CLASS = b"vm"


def machine_name(pod_uuid: str) -> str:
    return f"kvmpod-{pod_uuid}"


def _machine_manager(manager=None):
    """pystemd's machine1.Manager class, or the stand-in a test passes."""
    if manager is not None:
        return manager
    try:
        from pystemd.machine1 import Manager
    except ImportError:
        raise RuntimeError("this host runs systemd but pystemd is not installed; install kvmpod[systemd] "
                           "(pip) or python3-pystemd (apt), or pass --no-systemd") from None
    return Manager


def register_machine(pod_uuid: str, leader_pid: int, root_directory: str = "", manager=None) -> str:
    """CreateMachine for the pod; returns the machine's name. `manager` is pystemd's
    machine1.Manager class (a stand-in in tests)."""
    name = machine_name(pod_uuid)
    with _machine_manager(manager)() as m:
        m.Manager.CreateMachine(name.encode(), uuidlib.UUID(pod_uuid).bytes, SERVICE, CLASS, leader_pid,
                                root_directory.encode(), [])
    return name


def register_own_unit(pod_uuid: str, leader_pid: int, root_directory: str = "", manager=None) -> str:
    """RegisterMachine: the machine is the unit `leader_pid` runs in (kvmpod run's own
    kvmpod-<uuid>.service, host.pods.machine_unit), so `machinectl terminate` stops that unit and
    `machinectl poweroff` signals kvmpod run; returns the machine's name."""
    name = machine_name(pod_uuid)
    with _machine_manager(manager)() as m:
        m.Manager.RegisterMachine(name.encode(), uuidlib.UUID(pod_uuid).bytes, SERVICE, CLASS, leader_pid,
                                  root_directory.encode())
    return name
