"""Fixtures for the OpenBSD layer: a private cache and a fresh OpenBSD-shaped tree per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import make_tree


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MAPELAB_CACHE", str(cache))
    monkeypatch.delenv("MAPELAB_OPENBSD_SRC", raising=False)
    monkeypatch.setenv("MAPELAB_RUNS", str(tmp_path / "runs"))
    return cache


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


@pytest.fixture
def twin(tree: Path, tmp_path: Path) -> Path:
    """A copy of ``tree`` to edit."""
    dest = tmp_path / "edited"
    shutil.copytree(tree, dest)
    return dest
