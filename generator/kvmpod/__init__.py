"""kvmpod: appc pods in KVM guests.

The guest half is ``kvmpod-generator`` (:mod:`kvmpod.generator_cli`); the host half is
``kvmpod`` (:mod:`kvmpod.cli`). Both read the pod manifest through :mod:`kvmpod.manifest`.
"""
