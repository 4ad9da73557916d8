"""The hypervisor: its whole command line (QEMU, lkvm), the volumes and their staging, the supervisor
and virtiofsd, the VM's resources, launching it (transient unit or exec) and QMP."""
