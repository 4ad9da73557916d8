"""The pod's networks on the host: NIC descriptions, CNI results, their hypervisor and kernel arguments."""
