"""The pod: what both halves read and trust (the manifest, its validated model, mounts, names).

Imports neither kvmpod.guest nor kvmpod.host.
"""
