"""What runs inside the VM: kvmpod-generator, the units it writes, and `kvmpod status`.

Imports kvmpod.pod, never kvmpod.host.
"""
