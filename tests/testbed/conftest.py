"""Shared fixtures of the BR tests: one cosmote-like BR topology per module, BR running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed.br_fixture import BrTopology, build, require_root


@pytest.fixture(scope="module")
def topo() -> Iterator[BrTopology]:
    """The BR tests' namespaces (two CEs sharing 198.51.100.1, the internet) with the BR started."""
    require_root()
    t = build("cosmote-like")
    try:
        t.start_br()
        yield t
    finally:
        t.teardown()
