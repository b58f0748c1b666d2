"""Content-addressed keys and the layering rules (uses qemu-img, no machine)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mapelab.qemu import images
from mapelab.qemu.errors import ImageError
from mapelab.qemu.prune import prune


def test_key_is_canonical_and_sensitive() -> None:
    a = images.image_key("linux-ci", {"x": 1, "y": [1, 2]})
    assert a == images.image_key("linux-ci", {"y": [1, 2], "x": 1})  # key order does not matter
    assert a != images.image_key("linux-ci", {"x": 2, "y": [1, 2]})
    assert a != images.image_key("linux-ci", {"x": 1, "y": [1, 2]}, parent="base-0123456789abcdef")
    assert a != images.image_key("openbsd-base", {"x": 1, "y": [1, 2]})
    assert a.startswith("linux-ci-") and len(a.split("-")[-1]) == 16
    with pytest.raises(ValueError, match="kind"):
        images.image_key("Bad Kind", {})
    with pytest.raises(ValueError, match="image key"):
        images.find("../etc")


needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                    reason="qemu-img missing (apt-get install qemu-utils)")


def _base(root: Path) -> images.Image:
    key = images.image_key("testbase", {"n": 1})
    with images.LayerBuild(key, kind="testbase", inputs={"n": 1}, root=root) as lb:
        images.qemu_img("create", "-q", "-f", "qcow2", str(lb.disk), "16M")
        return lb.commit()


@needs_qemu_img
def test_layers_are_sealed_and_overlays_protect_their_base(tmp_path: Path) -> None:
    base = _base(tmp_path)
    assert base.sealed and images.find(base.key, tmp_path) == base
    assert not (base.disk.stat().st_mode & 0o222)  # read-only on disk too
    with pytest.raises(ImageError, match="sealed"):
        images.check_writable(base.disk, tmp_path)

    # a derived layer: built on the parent, then sealed; its disk names the parent's final path
    dkey = images.image_key("testderived", {"m": 1}, parent=base.key)
    with images.LayerBuild(dkey, kind="testderived", inputs={"m": 1}, parent=base, root=tmp_path) as lb:
        lb.create_disk_on_parent()
        derived = lb.commit()
    assert derived.parent == base.key
    assert str(base.disk) in images.qemu_img("info", str(derived.disk))
    assert derived.disk in base.overlays()

    run = tmp_path / "runs" / "r1" / "disk.qcow2"
    images.create_overlay(derived, run, owner="test")
    assert run in derived.overlays()
    with pytest.raises(ImageError, match="rebuilding it would corrupt"), images.LayerBuild(
            derived.key, kind="testderived", inputs={}, parent=base, root=tmp_path):
        pass
    with pytest.raises(ImageError, match="overlays"):
        images.remove(derived)
    with pytest.raises(ImageError, match="already exists"):
        images.create_overlay(derived, run, owner="test")

    # prune removes the stopped run, then (asked) the unused derived layer, never the base under it
    acts = prune(root=tmp_path, images_too=True, keep_keys=[base.key])
    assert any("removed run r1" in a for a in acts), acts
    assert any(f"removed image {derived.key}" in a for a in acts), acts
    assert images.find(base.key, tmp_path) is not None and images.find(derived.key, tmp_path) is None


@needs_qemu_img
def test_unfinished_builds_never_look_complete(tmp_path: Path) -> None:
    key = images.image_key("testbase", {"n": 2})
    with pytest.raises(RuntimeError), images.LayerBuild(key, kind="testbase", inputs={}, root=tmp_path) as lb:
        images.qemu_img("create", "-q", "-f", "qcow2", str(lb.disk), "1M")
        raise RuntimeError("crash mid-build")
    assert images.find(key, tmp_path) is None
    assert not list(images.images_dir(tmp_path).glob(".build-*"))


@needs_qemu_img
def test_a_machine_refuses_to_write_a_sealed_layer(tmp_path: Path) -> None:
    from mapelab.qemu.machine import Machine
    from mapelab.qemu.spec import Disk, MachineSpec

    base = _base(tmp_path)
    m = Machine(MachineSpec("w1", disks=(Disk(base.disk),)), root=tmp_path)
    with pytest.raises(ImageError, match="sealed"):
        m.start()
    assert m.popen is None  # refused before QEMU was started
