"""Suite-wide pytest setup: markers come from the top directory a test lives in (tests/unit → unit, …)."""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
# Only the first directory under tests/ decides: tests/unit/openbsd is unit, not openbsd.
_BY_DIR = {"unit": "unit", "testbed": "testbed", "e2e": "e2e", "vm": "vm", "openbsd": "openbsd"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(_TESTS)
        marker = _BY_DIR.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mapelab e2e")
    group.addoption("--ce", default=None,
                    help="CE backend for tests/e2e: auto (default), linux, linux-vm or openbsd")
    group.addoption("--ce-profile", default=None,
                    help="OpenBSD CE profile (vm/openbsd/profiles): static (default) or dhcp6leased")
    group.addoption("--ce-image", default=None, help="OpenBSD CE: the build image key (default: the newest build)")
    group.addoption("--ce-release", default=None, help="OpenBSD CE: the newest build of this release")
    group.addoption("--allow-unverified", action="store_true", default=False,
                    help="OpenBSD CE: install a profile's orchestrator files that have no sha256 pin")
    group.addoption("--scenario", action="append", default=None,
                    help="scenario(s) for tests/e2e (repeatable; default: cosmote-like, rfc7597-example1, "
                         "k12-small-set)")
