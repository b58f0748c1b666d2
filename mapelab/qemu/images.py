"""Layered qcow2 images: sealed base → sealed derived → per-run overlay.

Why layers: installing OpenBSD (or debootstrapping Debian) and building a series are slow; a
test run must not pay them again, and must not change them.  Each layer is named by a
content-addressed key (a hash of everything that went into it, including its parent's key), so
nothing is rebuilt that did not change and two recipes never share a layer by accident.

Rules enforced here:

* a layer is built in a temporary directory and renamed into place only when complete, then
  *sealed* (files made read-only, ``sealed`` in meta.json) — a crash never leaves a half-built
  layer that looks done;
* an image that has overlays (registered in its ``overlays.d/``) is never opened for writing:
  writing under a qcow2 overlay silently corrupts it;
* readers hold a shared lock on the layer (``image-<key>``), writers and pruning an exclusive one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache
from .errors import ImageError
from .locks import Lock, pid_alive

_KEY_OK = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}-[0-9a-f]{16}$")
DISK = "disk.qcow2"
META = "meta.json"


def image_key(kind: str, inputs: Mapping[str, Any], parent: str | None = None) -> str:
    """``<kind>-<16 hex>``: the SHA-256 of the canonical JSON of ``inputs`` (and the parent's key).

    ``inputs`` must hold everything that changes the layer's content (recipe files' hashes,
    release and set checksums, series hash, build options).
    """
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,40}$", kind):
        raise ValueError(f"image kind {kind!r}: lowercase letters, digits and - only")
    canon = json.dumps({"kind": kind, "parent": parent, "inputs": inputs}, sort_keys=True, separators=(",", ":"),
                       default=str)
    return f"{kind}-{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


def images_dir(root: Path | None = None) -> Path:
    return cache.sub("images", root)


def qemu_img(*args: str, timeout: float = 600) -> str:
    try:
        r = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ImageError("qemu-img not found: install qemu-utils (apt-get install qemu-utils)") from None
    if r.returncode != 0:
        raise ImageError(f"qemu-img {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


@dataclass(frozen=True)
class Image:
    """One layer in the cache: a directory holding ``disk.qcow2``, ``meta.json`` and extra files."""

    key: str
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / DISK

    @property
    def meta(self) -> dict[str, Any]:
        return cache.read_json(self.dir / META) or {}

    @property
    def sealed(self) -> bool:
        return bool(self.meta.get("sealed"))

    @property
    def parent(self) -> str | None:
        return self.meta.get("parent")

    def file(self, name: str) -> Path:
        """An extra file of the layer (e.g. the Linux guest's ``vmlinuz``); error if missing."""
        p = self.dir / name
        if not p.exists():
            raise ImageError(f"image {self.key}: {name} is missing; rebuild it (invoke vm.prune, then build again)")
        return p

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file())

    # -- overlays -----------------------------------------------------------------------------
    def _overlays_dir(self) -> Path:
        return self.dir / "overlays.d"

    def overlays(self) -> list[Path]:
        """Existing overlays backed by this image; registrations of deleted overlays are dropped."""
        out: list[Path] = []
        d = self._overlays_dir()
        if not d.is_dir():
            return out
        for rec in sorted(d.glob("*.json")):
            info = cache.read_json(rec) or {}
            path = Path(info.get("path", ""))
            if info.get("path") and path.exists():
                out.append(path)
            else:
                with contextlib.suppress(OSError):
                    rec.unlink()
        return out

    def lock(self, *, shared: bool, purpose: str) -> Lock:
        return Lock(f"image-{self.key}", shared=shared, purpose=purpose, root=self.dir.parent.parent)


def find(key: str, root: Path | None = None) -> Image | None:
    """The sealed layer ``key``, or None if it is not in the cache (or not complete)."""
    if not _KEY_OK.match(key):
        raise ValueError(f"image key {key!r}: expected <kind>-<16 hex digits> (see invoke vm.list)")
    d = images_dir(root) / key
    img = Image(key, d)
    if d.is_dir() and img.disk.exists() and img.sealed:
        return img
    return None


def list_images(root: Path | None = None) -> list[Image]:
    out = []
    for d in sorted(images_dir(root).iterdir()):
        if d.is_dir() and not d.name.startswith(".") and _KEY_OK.match(d.name):
            out.append(Image(d.name, d))
    return out


def _register_overlay(base: Image, overlay: Path, owner: str) -> None:
    d = base._overlays_dir()
    os.makedirs(d, exist_ok=True)
    tag = hashlib.sha256(str(overlay.absolute()).encode()).hexdigest()[:16]
    cache.write_json(d / f"{tag}.json", {"path": str(overlay.absolute()), "owner": owner, "created": time.time()})


def create_overlay(base: Image, overlay: Path, owner: str) -> Path:
    """A new qcow2 ``overlay`` backed by ``base`` (absolute path), registered in the base.

    Only a sealed base may get overlays: an unsealed one may still be written.
    """
    if not base.sealed:
        raise ImageError(f"image {base.key} is not sealed; finish (seal) it before layering on it")
    overlay = overlay.absolute()
    if overlay.exists():
        raise ImageError(f"overlay {overlay} already exists; remove it (invoke vm.prune) or choose another name")
    overlay.parent.mkdir(parents=True, exist_ok=True)
    _register_overlay(base, overlay, owner)
    tmp = overlay.with_name(f".{overlay.name}.tmp{os.getpid()}")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.disk.absolute()), str(tmp))
    os.replace(tmp, overlay)
    return overlay


def check_writable(disk: Path, root: Path | None = None) -> None:
    """Refuse to write ``disk`` if it is a sealed layer or if any overlay is backed by it."""
    disk = disk.absolute()
    for img in list_images(root):
        if img.disk.absolute() == disk:
            if img.sealed:
                raise ImageError(f"image {img.key} is sealed (read-only); boot it through an overlay instead")
            if img.overlays():
                raise ImageError(
                    f"image {img.key} has overlays ({', '.join(map(str, img.overlays()))}); writing it would "
                    f"corrupt them: remove them first (invoke vm.prune)"
                )


class LayerBuild:
    """Builds one layer in a temporary directory; :meth:`commit` seals it and renames it into place.

    Holds the layer's exclusive lock for the whole build, so two processes never build the same
    key at once (the second sees the sealed result when the first commits).
    """

    def __init__(self, key: str, *, kind: str, inputs: Mapping[str, Any], parent: Image | None = None,
                 root: Path | None = None) -> None:
        self.key = key
        self.root = root
        self.kind = kind
        self.inputs = dict(inputs)
        self.parent = parent
        self.final = images_dir(root) / key
        self.dir = images_dir(root) / f".build-{key}-{os.getpid()}"
        self.lock = Lock(f"image-{key}", purpose=f"building image {key}", root=root)
        self.started = time.time()

    def __enter__(self) -> LayerBuild:
        self.lock.acquire()
        old = Image(self.key, self.final)
        if self.final.exists() and old.overlays():
            self.lock.release()
            raise ImageError(
                f"image {self.key} has overlays ({', '.join(map(str, old.overlays()))}); rebuilding it would "
                f"corrupt them: stop their machines and remove them first (invoke vm.prune)"
            )
        sweep_builds(self.root)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(mode=0o700)
        return self

    @property
    def disk(self) -> Path:
        return self.dir / DISK

    def create_disk_on_parent(self) -> Path:
        """The layer's disk as an overlay of the parent (a derived layer), ready to be written by a machine."""
        if self.parent is None:
            raise ImageError(f"layer {self.key} has no parent to derive from")
        if not self.parent.sealed:
            raise ImageError(f"parent {self.parent.key} is not sealed")
        _register_overlay(self.parent, self.final / DISK, f"layer {self.key}")
        _register_overlay(self.parent, self.disk, f"layer {self.key} (building)")
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.parent.disk.absolute()), str(self.disk))
        return self.disk

    def commit(self, extra_meta: Mapping[str, Any] | None = None) -> Image:
        if not self.disk.exists():
            raise ImageError(f"layer {self.key}: no {DISK} was produced")
        if self.parent is not None:
            # the disk's backing path must name the final location of the parent, not a temp dir
            qemu_img("rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(self.parent.disk.absolute()),
                     str(self.disk))
        meta = {
            "key": self.key, "kind": self.kind, "inputs": self.inputs,
            "parent": self.parent.key if self.parent else None,
            "created": time.time(), "build_seconds": round(time.time() - self.started, 1),
            "sealed": True, **(extra_meta or {}),
        }
        cache.write_json(self.dir / META, meta)
        for f in self.dir.iterdir():
            if f.is_file():
                os.chmod(f, 0o444)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.dir, self.final)
        return Image(self.key, self.final)

    def __exit__(self, *exc: object) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.parent is not None and not self.final.exists():
            self.parent.overlays()  # drops the registrations of what was never committed
        self.lock.release()


def sweep_builds(root: Path | None = None) -> list[str]:
    """Remove temporary build directories whose builder process is gone."""
    msgs = []
    for d in images_dir(root).glob(".build-*"):
        m = re.match(r"^\.build-(.+)-(\d+)$", d.name)
        if m and not pid_alive(int(m.group(2)), None):
            shutil.rmtree(d, ignore_errors=True)
            msgs.append(f"removed unfinished build {d.name} (builder PID {m.group(2)} is gone)")
            cache.notice(msgs[-1])
    return msgs


def remove(img: Image) -> None:
    """Delete a layer; refused if it has overlays or anyone holds it."""
    if img.overlays():
        raise ImageError(f"image {img.key} has overlays ({', '.join(map(str, img.overlays()))}); remove them first")
    with img.lock(shared=False, purpose=f"removing image {img.key}"):
        for f in img.dir.rglob("*"):
            with contextlib.suppress(OSError):
                os.chmod(f, 0o644 if f.is_file() else 0o755)
        shutil.rmtree(img.dir)


@contextlib.contextmanager
def using(img: Image, purpose: str) -> Iterator[Image]:
    """Hold a shared lock on ``img`` while a machine runs on it (pruning then skips it)."""
    lk = img.lock(shared=True, purpose=purpose)
    lk.acquire()
    try:
        yield img
    finally:
        lk.release()
