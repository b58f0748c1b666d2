"""The invoke tasks: documented, bad input is one line with exit code 2, reports are printed."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit

from mapelab.tasks import patches as tasks

from .helpers import diff_of, edit

LB = "sys/net/pf_lb.c"
SERIES = """release = "7.6"
[topics.t]
subject = "pf: a change"
rationale = "Because."

[[patch]]
name = "one"
topic = "t"
path = "one.diff"
"""

ALL = [tasks.fetch_src, tasks.submission, tasks.check, tasks.apply, tasks.refresh_, tasks.plan]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_documented(t) -> None:
    assert t.__doc__ and t.__doc__.strip()
    params = [p for p in inspect.signature(t.body).parameters if p != "c"]
    assert set(t.help) == set(params), f"{t.name}: help for {sorted(set(params) - set(t.help))} missing"


def test_registered() -> None:
    from mapelab.tasks import build_collection

    names = set(build_collection().task_names)
    assert {"fetch-src", "submission", "patch.check", "patch.apply", "patch.refresh", "patch.plan"} <= names


@pytest.fixture
def series_file(tree: Path, twin: Path, tmp_path: Path) -> Path:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    d = tmp_path / "s"
    d.mkdir()
    (d / "one.diff").write_text(diff_of(tree, twin, [LB]))
    (d / "s.toml").write_text(SERIES)
    return d / "s.toml"


def _exit(fn, *args, **kw) -> Exit:
    with pytest.raises(Exit) as e:
        fn(Context(), *args, **kw)
    return e.value


def test_check_ok(series_file: Path, tree: Path, capsys) -> None:
    tasks.check.body(Context(), series=str(series_file), tree=str(tree))
    out = capsys.readouterr().out
    assert "sys/net/pf_lb.c: hunk 1 clean" in out and "1 clean, 0 offset, 0 fuzz, 0 failed" in out


def test_check_failure_exits_1(series_file: Path, tree: Path, capsys) -> None:
    edit(tree / LB, "\t\treturn (5);\n", "\t\treturn (7);\n")
    e = _exit(tasks.check.body, series=str(series_file), tree=str(tree))
    assert e.code == 1
    assert "--- reject: sys/net/pf_lb.c hunk 1 ---" in capsys.readouterr().out


def test_check_json(series_file: Path, tree: Path, capsys) -> None:
    tasks.check.body(Context(), series=str(series_file), tree=str(tree), json=True)
    [rep] = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["hunks"][0]["status"] == "clean"


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({}, "give --release 7.6"),
        ({"series": "nope"}, "no file"),
        ({"release": "7.6", "src": "/nonexistent"}, "not a directory"),
    ],
)
def test_bad_input_exits_2(kw: dict, needle: str) -> None:
    e = _exit(tasks.check.body, **kw)
    assert e.code == 2 and needle in str(e.message) and "\n" not in str(e.message)


def test_unverified_series_refused(tree: Path) -> None:
    e = _exit(tasks.check.body, release="7.8", src=str(tree))
    assert e.code == 2 and "dhcp6leased-mape-core-78" in e.message and "--allow-unverified" in e.message


def test_check_bad_tree(series_file: Path, tmp_path: Path) -> None:
    e = _exit(tasks.check.body, series=str(series_file), tree=str(tmp_path))
    assert e.code == 2 and "does not look like /usr/src" in e.message


def test_apply_to_copy(series_file: Path, tree: Path, tmp_path: Path, twin: Path) -> None:
    out = tmp_path / "work"
    tasks.apply.body(Context(), series=str(series_file), src=str(tree), out=str(out))
    assert (out / LB).read_text() == (twin / LB).read_text()
    assert (tree / LB).read_text() != (twin / LB).read_text()  # the source stays pristine
    assert _exit(tasks.apply.body, series=str(series_file), src=str(tree), out=str(out)).code == 2
    assert _exit(tasks.apply.body, series=str(series_file)).code == 2


def test_refresh(series_file: Path, tree: Path, twin: Path, tmp_path: Path) -> None:
    edit(twin / LB, "\t\treturn (7);\n", "\t\treturn (7 * 7);\n")
    out = tmp_path / "new.diff"
    tasks.refresh_.body(Context(), tree=str(twin), pristine=str(tree), series=str(series_file), out=str(out))
    text = out.read_text()
    assert text.startswith("Index: sys/net/pf_lb.c\n") and "+\t\treturn (7 * 7);" in text
    assert _exit(tasks.refresh_.body).code == 2
    assert _exit(tasks.refresh_.body, tree=str(twin), pristine=str(tree)).code == 2
    assert _exit(tasks.refresh_.body, tree=str(twin), series=str(series_file), patch="zz").code == 2


def test_plan(tmp_path: Path, capsys) -> None:
    p = tmp_path / "x.diff"
    p.write_text("--- sys/net/pfvar.h\n+++ sys/net/pfvar.h\n@@ -1 +1 @@\n-a\n+b\n")
    tasks.plan.body(Context(), patch=str(p), json=True)
    plan = json.loads(capsys.readouterr().out)
    assert plan["reboot"] and any(s["target"] == "sbin/pfctl" for s in plan["steps"])
    assert _exit(tasks.plan.body, patch=str(tmp_path / "missing")).code == 2


def test_submission_writes_mail(series_file: Path, tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mails"
    tasks.submission.body(Context(), series=str(series_file), tree=str(tree), out=str(out))
    mail = (out / "t.mail").read_text()
    assert mail.startswith("To: tech@openbsd.org\nSubject: pf: a change\n")
    assert "all checks passed" in (out / "t.checks.txt").read_text()


def test_submission_seeded_error_exits_1(series_file: Path, tree: Path, twin: Path, tmp_path: Path) -> None:
    edit(twin / LB, "\t\treturn (9);\n", "\t\treturn 9;\n")
    (series_file.parent / "one.diff").write_text(diff_of(tree, twin, [LB]))
    e = _exit(tasks.submission.body, series=str(series_file), tree=str(tree), out=str(tmp_path / "m"))
    assert e.code == 1
    assert "return (x);" in (tmp_path / "m" / "t.checks.txt").read_text()


def test_fetch_src_local(tree: Path, capsys) -> None:
    tasks.fetch_src.body(Context(), src=str(tree))
    assert capsys.readouterr().out.splitlines()[0] == str(tree)
    assert _exit(tasks.fetch_src.body).code == 2




def test_apply_refuses_cached_tree(series_file: Path, tree: Path) -> None:
    (tree / ".mapelab-source.json").write_text('{"kind": "release", "release": "7.6"}')
    e = _exit(tasks.apply.body, series=str(series_file), tree=str(tree))
    assert e.code == 2 and "--out" in e.message
