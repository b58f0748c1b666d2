"""The dependency rule (docs/architecture.md): tasks → library → mape, and mape stays pure."""

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


#: docs/architecture.md's layers: a module may import its own package and lower layers only.
LAYERS: dict[str, int] = {
    "mape": 0,
    "netio": 1, "files": 1, "runs": 1, "errors": 1,
    "qemu": 2, "scenario": 2,
    "testbed": 3, "guests": 3, "openbsd": 3,
    "ce": 4, "calc": 4,
    "e2e": 5,
    "tasks": 6,
}


def _unit(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _targets(path: Path) -> set[str]:
    """The top-level mapelab units ``path`` imports (absolute or relative imports)."""
    here = list(path.relative_to(PKG).parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(["mapelab", *base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] if mod == "mapelab" or not node.module else [mod]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("mapelab.") and len(n.split(".")) > 1}
    return out


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p) for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG}
    assert units <= set(LAYERS), f"add {sorted(units - set(LAYERS))} to LAYERS (and docs/architecture.md)"


def test_imports_point_down() -> None:
    wrong = []
    for path in PKG.rglob("*.py"):
        if path.parent == PKG and path.name == "__init__.py":
            continue
        unit = _unit(path)
        for target in _targets(path) - {unit}:
            if target in LAYERS and LAYERS[target] >= LAYERS[unit]:
                wrong.append(f"{path.relative_to(PKG)} ({unit}, layer {LAYERS[unit]}) imports {target} "
                             f"(layer {LAYERS[target]})")
    assert not wrong, "\n".join(wrong)
