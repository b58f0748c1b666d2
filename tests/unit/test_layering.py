"""The dependency rule of DESIGN.md: tasks → library → mape, and mape stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mapelab"
PURE_STDLIB = {"__future__", "collections", "dataclasses", "ipaddress", "typing", "enum", "functools"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
    return out


def test_mape_is_pure() -> None:
    for path in (PKG / "mape").glob("*.py"):
        for name in imports(path):
            if name.startswith("."):
                assert not name.startswith(".."), f"{path.name} imports {name}: mape must not import mapelab"
                continue
            root = name.split(".")[0]
            assert root in PURE_STDLIB, f"{path.name} imports {name}: mape is pure (no I/O, no subprocess)"


def test_library_does_not_import_tasks() -> None:
    for path in PKG.rglob("*.py"):
        if "tasks" in path.relative_to(PKG).parts:
            continue
        for name in imports(path):
            assert "tasks" not in name.split("."), f"{path} imports {name}: tasks sit above the library"
