"""Reclaiming cache space without ever pulling a disk from under a running machine.

What goes: run directories of machines that are not running (their overlays, transcripts),
unfinished builds whose builder is gone, stale lock records, and — only when asked — image
layers that no overlay uses and no process holds.  What stays: anything locked or backing an
existing overlay, and the keys the caller says to keep (the current recipe's image).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from . import cache, images
from .locks import Lock
from .machine import runs_dir


def prune(*, root: Path | None = None, images_too: bool = False, keep_keys: Iterable[str] = (),
          dry_run: bool = False, runs: Iterable[str] | None = None) -> list[str]:
    """Remove what is safe to remove; one line per action (or would-be action with ``dry_run``).

    ``runs`` limits the run directories considered to those names (a test cleaning up after
    itself must not remove other users' evidence from a shared cache).
    """
    only = set(runs) if runs is not None else None
    keep = set(keep_keys)
    acts: list[str] = []
    verb = "would remove" if dry_run else "removed"
    locks_dir = cache.sub("locks", root)
    for holders in sorted(locks_dir.glob("*.holders")):
        name = holders.name.removesuffix(".holders")
        lk = Lock(name, root=root)
        if not dry_run:
            acts += lk.sweep_stale()
    for d in sorted(runs_dir(root).iterdir()):
        if not d.is_dir() or (only is not None and d.name not in only):
            continue
        lk = Lock(f"machine-{d.name}", root=root)
        if not lk.is_free():
            acts.append(f"kept run {d.name}: its machine is running (invoke vm.stop {d.name})")
            continue
        if not dry_run:
            shutil.rmtree(d, ignore_errors=True)
            for p in (lk.path,):
                p.unlink(missing_ok=True)
            if lk.holders_dir.is_dir():
                shutil.rmtree(lk.holders_dir, ignore_errors=True)
        acts.append(f"{verb} run {d.name}")
    if not dry_run:
        acts += images.sweep_builds(root)
    for img in images.list_images(root):
        ovl = img.overlays()  # also drops registrations of removed runs
        if not images_too:
            continue
        if img.key in keep:
            acts.append(f"kept image {img.key}: current")
            continue
        if ovl:
            acts.append(f"kept image {img.key}: {len(ovl)} overlay(s) use it")
            continue
        lk = img.lock(shared=False, purpose="prune")
        if not lk.is_free():
            acts.append(f"kept image {img.key}: in use")
            continue
        size = img.size_bytes()
        if not dry_run:
            images.remove(img)
        acts.append(f"{verb} image {img.key} ({size / 2**20:.0f} MiB)")
    return acts
