"""Prerequisites of the VM tests: each missing one skips, naming what is missing and the fix."""

from __future__ import annotations

import os
import shutil

import pytest


def require_qemu() -> None:
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: apt-get install {pkg}")


@pytest.fixture(scope="session")
def linux_image():
    """The CI Linux guest image: reused from the cache, or built (needs root, debootstrap, a Debian source)."""
    require_qemu()
    from mapelab.guests import linux
    from mapelab.qemu import images
    from mapelab.qemu.errors import ImageError

    img = images.find(linux.image_key())
    if img is None:
        if os.geteuid() != 0:
            pytest.skip("the Linux guest image is not built and building it needs root (debootstrap)")
        if shutil.which("debootstrap") is None:
            pytest.skip("debootstrap missing: apt-get install debootstrap")
        try:
            linux.debian_mirror(linux.load_recipe().suite)
        except ImageError as e:
            pytest.skip(str(e))
        img = linux.build(progress=print)
    return img


@pytest.fixture
def notices():
    from mapelab.qemu import cache

    got: list[str] = []
    cache.set_notifier(got.append)
    yield got
    cache.set_notifier(None)
