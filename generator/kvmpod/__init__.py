"""kvmpod: appc pods in KVM guests, in three rooms with one-way imports.

- :mod:`kvmpod.pod`: the manifest and its validated model, read by both halves; imports neither.
- :mod:`kvmpod.guest`: ``kvmpod-generator`` (:mod:`kvmpod.guest.generator`) and its units; imports pod.
- :mod:`kvmpod.host`: ``kvmpod`` (:mod:`kvmpod.host.cli`); imports pod and guest.
"""
