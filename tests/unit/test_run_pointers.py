"""Testbed runs and e2e runs keep their own pointers, and a pointer to the wrong kind is never followed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapelab import runs


def make(root: Path, name: str, kind: str, **fields: object) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / runs.KINDS[kind]).write_text(json.dumps({"kind": kind, **fields}))
    return d


def test_each_kind_has_its_own_pointer(tmp_path: Path) -> None:
    tb = make(tmp_path, "20261201-100000-ab12", "testbed", state="down")
    e2e = make(tmp_path, "e2e-20261201-100500", "e2e", verdict="passed")
    runs.set_latest(tb, "testbed")
    runs.set_latest(e2e, "e2e")  # after test-e2e the testbed pointer still leads to a testbed run
    assert runs.latest("testbed", tmp_path) == tb.resolve()
    assert runs.latest("e2e", tmp_path) == e2e.resolve()
    assert (tmp_path / "latest-testbed").is_symlink() and (tmp_path / "latest-e2e").is_symlink()


def test_a_pointer_to_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    e2e = make(tmp_path, "e2e-20261201-100500", "e2e", verdict="passed")
    (tmp_path / "latest-testbed").symlink_to(e2e.name)  # as a stale or hand-made link could be
    with pytest.raises(runs.RunLookupError, match=r"not a testbed run \(its record says e2e\)"):
        runs.latest("testbed", tmp_path)
    with pytest.raises(runs.RunLookupError, match="no e2e run yet"):
        runs.latest("e2e", tmp_path)


def test_a_record_claiming_another_kind_is_not_that_kind(tmp_path: Path) -> None:
    d = tmp_path / "odd"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"kind": "testbed"}))
    assert runs.run_kind(d) is None
    (d / "summary.json").write_text("{half")
    assert runs.run_kind(d) is None
    (d / "summary.json").write_text(json.dumps({"verdict": "passed"}))  # written before the field existed
    assert runs.run_kind(d) == "e2e"


def test_the_shared_pointer_is_retired(tmp_path: Path) -> None:
    tb = make(tmp_path, "20261201-100000-ab12", "testbed")
    (tmp_path / "latest").symlink_to(tb.name)
    runs.set_latest(tb, "testbed")
    assert not (tmp_path / "latest").is_symlink()


def test_testbed_api_latest_never_returns_an_e2e_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mapelab.testbed import api
    from mapelab.testbed.supervisor import TestbedError

    monkeypatch.setenv("MAPELAB_RUNS", str(tmp_path))
    e2e = make(tmp_path, "e2e-20261201-100500", "e2e", verdict="passed")
    runs.set_latest(e2e, "e2e")
    with pytest.raises(TestbedError, match="no testbed run yet"):
        api.latest()
    tb = make(tmp_path, "20261201-100000-ab12", "testbed")
    runs.set_latest(tb, "testbed")
    assert api.latest().run_dir == tb.resolve()
