"""What the launcher calls on the host: the kvmpod CLI, hypervisor argv, networks, staging, launching.

May import kvmpod.pod and kvmpod.guest (explain and status show the guest's units).
"""
