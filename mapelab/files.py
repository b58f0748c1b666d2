"""File-system helpers every layer shares: the cache root, atomic writes, sha256 of a file.

One implementation so the promise "nothing is half-written" holds the same way everywhere: data
goes to a temporary file beside its target, is fsynced, then renamed over it.  (The reference CE
daemon keeps its own two-line copy in ``mapelab.ce.daemon.system``: it must run inside a guest with
only the stdlib, ``mapelab.mape``, ``mapelab.netio`` and ``mapelab.ce``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

ENV_CACHE = "MAPELAB_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$MAPELAB_CACHE`` if set, else ``~/.cache/mapelab``; created 0700.

    0700 because the SSH private key and the serial console sockets (a root shell on the Linux
    guest) live below it.
    """
    env = os.environ.get(ENV_CACHE)
    root = (Path(env).expanduser() if env else Path.home() / ".cache" / "mapelab").absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def cache_sub(*parts: str) -> Path:
    """A sub-directory of the cache, created on first use."""
    path = cache_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (release tarballs are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def named_toml(name_or_path: str | Path, directory: Path) -> tuple[Path, list[str]]:
    """A data file given by name (``cosmote-like`` → ``directory/cosmote-like.toml``) or by path,
    and the names known in ``directory`` — for the caller's "no such …; known: …" message.

    Scenarios, CE profiles and the like are all looked up this way: a bare word is a name in the
    repository's data directory, anything with a ``.toml`` suffix or a directory part is a path.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml" and p.parent == Path("."):
        p = directory / f"{p.name}.toml"
    return p, sorted(x.stem for x in directory.glob("*.toml"))
