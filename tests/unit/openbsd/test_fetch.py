"""Downloads: cached, verified before use, a mismatch names both hashes and the URL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mapelab.openbsd.errors import FetchError, UnreachableError
from mapelab.openbsd.fetch import check_sha256, fetch


@pytest.fixture
def remote(tmp_path: Path) -> tuple[str, str, Path]:
    f = tmp_path / "remote" / "x.patch"
    f.parent.mkdir()
    f.write_bytes(b"--- a\n+++ a\n@@ -1 +1 @@\n-a\n+b\n")
    return f.as_uri(), hashlib.sha256(f.read_bytes()).hexdigest(), f


def test_pinned_fetch_is_cached(remote, _private_cache: Path) -> None:
    url, sha, f = remote
    got = fetch(url, sha)
    assert got.verified and got.sha256 == sha and got.path.read_bytes() == f.read_bytes()
    assert got.path.is_relative_to(_private_cache)
    f.unlink()  # the second fetch must come from the cache
    assert fetch(url, sha).path == got.path


def test_mismatch_names_both_hashes_and_url(remote) -> None:
    url, sha, _ = remote
    wrong = "0" * 64
    with pytest.raises(FetchError) as e:
        fetch(url, wrong)
    msg = str(e.value)
    assert url in msg and wrong in msg and sha in msg and "mismatch" in msg


def test_mismatch_leaves_nothing_looking_complete(remote, _private_cache: Path) -> None:
    url, _, _ = remote
    with pytest.raises(FetchError):
        fetch(url, "1" * 64)
    leftovers = [p for p in _private_cache.rglob("*") if p.is_file()]
    assert leftovers == []


def test_damaged_cache_is_refetched(remote) -> None:
    url, sha, _ = remote
    got = fetch(url, sha)
    got.path.write_bytes(b"damaged")
    assert fetch(url, sha).path.read_bytes() != b"damaged"


def test_unpinned_refused_unless_allowed(remote) -> None:
    url, sha, _ = remote
    with pytest.raises(FetchError, match=r"no sha256 pinned.*--allow-unverified"):
        fetch(url)
    got = fetch(url, allow_unverified=True)
    assert not got.verified and got.sha256 == sha


def test_missing_local_file_is_not_unreachable(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"cannot read it") as e:
        fetch((tmp_path / "nope").as_uri(), "2" * 64)
    assert not isinstance(e.value, UnreachableError)


def test_unreachable_names_the_host() -> None:
    """Nothing listens on 127.0.0.1:1: the error is the one kind a test may skip on, and names the host."""
    with pytest.raises(UnreachableError, match=r"cannot reach 127\.0\.0\.1") as e:
        fetch("http://127.0.0.1:1/x.patch", "2" * 64)
    assert e.value.host == "127.0.0.1"


def test_mismatch_is_not_unreachable(tmp_path: Path) -> None:
    f = tmp_path / "x.patch"
    f.write_text("x\n")
    with pytest.raises(FetchError, match=r"sha256 mismatch") as e:
        fetch(f.as_uri(), "3" * 64)
    assert not isinstance(e.value, UnreachableError)


def test_bad_pin() -> None:
    with pytest.raises(FetchError, match=r"not a sha256"):
        check_sha256("abc", "series x")
