"""Suite-wide pytest setup: markers come from the directory a test lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

_BY_DIR = {"unit": "unit", "testbed": "testbed", "e2e": "e2e", "vm": "vm", "openbsd": "openbsd"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for part, marker in _BY_DIR.items():
            if part in parts:
                item.add_marker(getattr(pytest.mark, marker))
