"""The e2e suite's guest image is the product's base image (kvmpod.host.images.stage1); this module keeps
the harness's names (ensure_image, GuestImage, recipe_hash, CACHE_ROOT, BUILT_THIS_RUN, ...).

Run ``python3 -m tests.e2e.guestimage`` from the repository root to prebuild.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "generator"))

from kvmpod.host.images import stage1 as _stage1  # noqa: E402
from kvmpod.host.images.stage1 import (CACHE_ROOT, MIRROR_ENV, SUITE, GuestImage, ImageBuildError,  # noqa: E402,F401
                                _deb822_mirror, _one_line_mirror, _paths, build_seconds, ensure_stage1,
                                host_mirror, recipe_hash)


def ensure_image() -> GuestImage:
    return _stage1.ensure_image()


def __getattr__(name: str):
    if name == "BUILT_THIS_RUN":  # set by the product's builder when this process built the base
        return _stage1.BUILT_THIS_RUN
    raise AttributeError(name)


if __name__ == "__main__":
    img = ensure_image()
    print(f"root={img.root}\nvmlinuz={img.vmlinuz}\ninitrd={img.initrd}\nbuild_seconds={build_seconds(img)}")
