"""Downloads into the cache, verified by sha256 before anything uses them.

A file is downloaded to ``NAME.part`` (resumed with an HTTP Range request when a ``.part`` is
already there), hashed, compared with the pin and only then renamed to its final name, so a
partial or tampered file is never used and never left looking complete.  Pinned files live
under ``downloads/<sha256>/`` (two series pinning the same bytes share them); unpinned ones,
allowed only when the caller says so, under ``downloads/unverified/`` and are fetched afresh
each time, with the hash printed so the user can pin it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..files import cache_sub, sha256_file
from .errors import FetchError, UnreachableError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Fetched:
    """A file in the cache: where it is, its sha256, and whether that matched a pin."""

    path: Path
    sha256: str
    verified: bool


def check_sha256(text: str, where: str) -> str:
    """Normalise a sha256 pin, or say what is wrong with it (``where`` names the input)."""
    value = text.strip().lower()
    if not _HEX64.match(value):
        raise FetchError(f"{where}: {text!r} is not a sha256 (64 hex digits); run `sha256sum FILE` to get one")
    return value


def _name_for(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return name or "download"


def _open(url: str, offset: int):
    req = urllib.request.Request(url, headers={"User-Agent": "mapelab"})
    if offset and url.startswith(("http://", "https://")):
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=60)


def _download(url: str, part: Path, progress: Progress | None) -> None:
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset)
    except urllib.error.HTTPError as e:  # the host answered: the URL is wrong, not the network
        raise FetchError(f"{url}: the server answered HTTP {e.code} ({e.reason}); check the URL") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if url.startswith("file:"):
            raise FetchError(f"{url}: cannot read it ({reason}); check the path") from None
        host = urllib.parse.urlparse(url).hostname or url
        raise UnreachableError(f"{url}: cannot reach {host} ({reason}); check the network, or use a local copy",
                               host) from None
    except ValueError as e:
        raise FetchError(f"{url}: not a URL mapelab can download ({e}); check the series entry") from None
    with resp:
        status = getattr(resp, "status", None)
        if offset and status != 206:
            offset = 0  # the server ignored the Range: start over
        total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
        total_n = int(total) + offset if total and total.isdigit() else None
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total_n)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise FetchError(f"{url}: download interrupted ({e}); run again to resume") from None


def stderr_progress(done: int, total: int | None) -> None:
    """A progress callback for long downloads: MiB done / total on one rewritten stderr line."""
    if total and sys.stderr.isatty():
        end = "\n" if done >= total else ""
        print(f"\r  {done >> 20} / {total >> 20} MiB", end=end, file=sys.stderr, flush=True)


def fetch(
    url: str,
    sha256: str | None = None,
    *,
    allow_unverified: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
) -> Fetched:
    """Return a cached copy of ``url`` whose sha256 equals ``sha256``, downloading it if needed.

    Without a pin the download is refused unless ``allow_unverified`` is set: the default
    series for new releases point at patches nobody has pinned yet, and using them must be a
    decision the user makes, not something that happens.
    """
    name = name or _name_for(url)
    if sha256 is not None:
        pin = check_sha256(sha256, url)
        final = cache_sub("downloads", pin) / name
        if final.exists():
            got = sha256_file(final)
            if got == pin:
                return Fetched(final, pin, True)
            final.unlink()  # damaged in the cache: fetch again
        part = final.with_name(final.name + ".part")
        _download(url, part, progress)
        got = sha256_file(part)
        if got != pin:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{url}: sha256 mismatch: expected {pin}, got {got}; the file changed upstream or was tampered "
                "with; check it and update the pin in the series file only if the new content is trusted"
            )
        os.replace(part, final)
        return Fetched(final, pin, True)
    if not allow_unverified:
        raise FetchError(
            f"{url}: no sha256 pinned; add `sha256 = \"...\"` to the series entry, or pass --allow-unverified "
            "to use it anyway"
        )
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    final = cache_sub("downloads", "unverified", key) / name
    part = final.with_name(final.name + ".part")
    part.unlink(missing_ok=True)
    _download(url, part, progress)
    got = sha256_file(part)
    os.replace(part, final)
    return Fetched(final, got, False)
