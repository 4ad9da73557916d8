"""Pods on the host: their directories, state and locks, the apps' output, machined, the files staged
into the guest root and the units rendered for it."""
