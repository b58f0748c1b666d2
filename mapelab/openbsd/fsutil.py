"""Small file-system helpers: the cache root, sha256 of a file, and atomic writes.

Everything this package writes goes through :func:`atomic_write` (or a ``.part`` file renamed
after verification) so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

ENV_CACHE = "MAPELAB_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$MAPELAB_CACHE`` if set, else ``~/.cache/mapelab`` (created 0700)."""
    env = os.environ.get(ENV_CACHE)
    root = (Path(env).expanduser() if env else Path.home() / ".cache" / "mapelab").absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def cache_sub(*parts: str) -> Path:
    """A sub-directory of the cache, created on first use."""
    path = cache_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (release tarballs are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
