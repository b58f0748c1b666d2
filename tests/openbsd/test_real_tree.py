"""patch.check --release 7.6 against the real OpenBSD 7.6 tree, where sources can be had.

Sources come from ``$MAPELAB_OPENBSD_SRC`` (an unpacked /usr/src) or, with network, from the
signify-verified 7.6 release tarballs.  Toru Mano's mape76.patch is fetched by its pinned
sha256 (or found in the cache).  Only an unreachable host skips, and the reason names it: the
patch comes from another host than the mirror probed for the sources, so a sha256 mismatch
or an HTTP error there is a failure, never "cannot be downloaded".
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from invoke import Context

from mapelab.openbsd import series, sources
from mapelab.openbsd.errors import UnreachableError

MIRROR_HOST = "cdn.openbsd.org"
REASON = (f"OpenBSD sources cannot be downloaded on this machine ({MIRROR_HOST} unreachable): set "
          "MAPELAB_OPENBSD_SRC=/path or run with network")


def _network() -> bool:
    try:
        with socket.create_connection((MIRROR_HOST, 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def src76() -> Path:
    env = os.environ.get(sources.ENV_SRC)
    if env:
        return sources.check_tree(Path(env))
    if not _network():
        pytest.skip(REASON)
    return sources.obtain(sources.SourceSpec("release", release="7.6"))


@pytest.fixture(scope="module")
def mape76() -> str:
    """The pinned patch; a mismatch or any other fetch error fails the test (it is not "no network")."""
    try:
        return series.patch_text(series.load("7.6").patches[0])
    except UnreachableError as e:
        pytest.skip(f"mape76.patch cannot be downloaded: {e.host} unreachable ({e})")


def test_patch_check_release_76(src76: Path, mape76: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mapelab.tasks.patches import check

    check.body(Context(), release="7.6", src=str(src76))  # raises Exit(1) if a hunk fails
    out = capsys.readouterr().out
    assert "0 failed" in out


def test_release_sources_are_signify_verified(src76: Path) -> None:
    stamp = sources.describe(src76)
    if stamp["kind"] != "release":
        pytest.skip("sources came from MAPELAB_OPENBSD_SRC, not the signed release")
    assert stamp["key"].endswith("openbsd-76-base.pub")


def test_pfvar_consumer_list_matches_the_tree(src76: Path) -> None:
    """Every listed consumer includes <net/pfvar.h> in the real tree, and none is missing from the list."""
    from mapelab.openbsd import components

    found = components.scan_abi_consumers(src76)
    listed = {c["dir"]: c["evidence"] for c in components.abi_consumers()}
    missing = sorted(set(found) - set(listed))
    assert not missing, f"add to mapelab/openbsd/data/pfvar_consumers.toml: {missing}"
    stale = sorted(d for d in listed if d not in found and (src76 / d).is_dir())
    assert not stale, f"listed but no longer including <net/pfvar.h>: {stale}"
