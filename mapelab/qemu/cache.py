"""Where the VM layer keeps things: one cache directory, overridable by ``MAPELAB_CACHE``.

Layout (all under :func:`cache_dir`)::

    images/<key>/       one sealed image layer: disk.qcow2, meta.json, boot files
    runs/<name>/        one machine: overlay, sockets, transcripts, machine.json
    locks/              lock files and their holder records (see :mod:`mapelab.qemu.locks`)
    ssh/id_ed25519      the cache's SSH key, installed into every guest built here
    accel.json          the accelerator probe's last verdict

Files are written to a temporary name and renamed, so a crash never leaves a half-written file
that looks complete.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapelab.files import ENV_CACHE, atomic_write, cache_dir  # noqa: F401 - the cache API lives here too


def sub(name: str, root: Path | None = None) -> Path:
    """A sub-directory of the cache, created on first use."""
    path = (root or cache_dir()) / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", mode)


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or torn file reads as None (callers treat it as absent)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _stderr_notice(message: str) -> None:
    print(f"mapelab: {message}", file=sys.stderr, flush=True)


_notifier: Callable[[str], None] = _stderr_notice
_log = logging.getLogger("mapelab.qemu")


def set_notifier(fn: Callable[[str], None] | None) -> None:
    """Route the layer's loud notices (TCG fallback, stale lock cleaned) somewhere else; None = stderr."""
    global _notifier
    _notifier = fn or _stderr_notice


def notice(message: str) -> None:
    """Say something the user must see even when nothing failed (a fallback, a cleanup)."""
    _log.info(message)
    _notifier(message)
