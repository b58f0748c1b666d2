"""A benchmark below its floor exits non-zero (a CI step must not print "BELOW FLOOR" and pass)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_mape.py"


def _bench_mape():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_mape", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_mape_exits_1_below_its_floor(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_mape()
    monkeypatch.setitem(bench.FLOORS, "derivation", 10**12)  # no machine derives a trillion per second
    assert bench.main() == 1
    out = capsys.readouterr()
    assert "BELOW FLOOR" in out.out and "below the floor: derivation" in out.err
    monkeypatch.setitem(bench.FLOORS, "derivation", 1)
    monkeypatch.setitem(bench.FLOORS, "membership", 1)
    assert bench.main() == 0
