"""The deployment gate: every claim is proven by some e2e test, and the verdict is never a pass by omission."""

from __future__ import annotations

import ast
from pathlib import Path

from mapelab.e2e import gate

E2E = Path(__file__).resolve().parents[2] / "e2e"


def _marked_claims() -> dict[str, list[str]]:
    """claim id → the e2e tests that carry ``@pytest.mark.claim(id)`` (read from the source)."""
    out: dict[str, list[str]] = {}
    for f in sorted(E2E.glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for d in node.decorator_list:
                if (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "claim"
                        and d.args and isinstance(d.args[0], ast.Constant)):
                    out.setdefault(str(d.args[0].value), []).append(f"{f.name}::{node.name}")
    return out


def test_every_gate_claim_has_a_test_and_every_marker_a_claim() -> None:
    marked = _marked_claims()
    ids = {c.id for c in gate.claims()}
    assert ids - set(marked) == set(), f"gate claims no e2e test proves: {sorted(ids - set(marked))}"
    assert set(marked) - ids == set(), f"claim markers naming no gate claim: {sorted(set(marked) - ids)}"


def test_the_gate_passes_only_when_every_claim_passed() -> None:
    ids = [c.id for c in gate.claims()]
    all_passed = [(i, "passed", "") for i in ids]
    assert gate.evaluate(all_passed)["verdict"] == "passed"
    one_unsupported = [*all_passed[1:], (ids[0], "unsupported", "unsupported: no os-build")]
    g = gate.evaluate(one_unsupported)
    assert g["verdict"] == "open" and g["claims"][ids[0]]["verdict"] == "unsupported"
    assert g["claims"][ids[0]]["reasons"] == ["unsupported: no os-build"]
    missing = all_passed[1:]
    assert gate.evaluate(missing)["claims"][ids[0]]["verdict"] == "not run"
    assert gate.evaluate(missing)["verdict"] == "open"
    failed = [*all_passed, (ids[1], "failed", "boom")]
    g = gate.evaluate(failed)
    assert g["verdict"] == "failed" and g["claims"][ids[1]]["verdict"] == "failed"
    skipped_only = [*all_passed[1:], (ids[0], "skipped", "no scenario")]
    assert gate.evaluate(skipped_only)["claims"][ids[0]]["verdict"] == "not run"
