"""Shared setup for the end-to-end suite."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here so `-m "not e2e"` works without touching setup.cfg.
    config.addinivalue_line("markers", "e2e: boots a QEMU guest (slow; needs root, qemu, debootstrap)")
