"""tech@ submissions: the mail's shape, "tested on" from a run record, and the reviewer checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mapelab.openbsd import mandoc, series, submission
from mapelab.openbsd.errors import SubmissionError

from .helpers import diff_of, edit

LB = "sys/net/pf_lb.c"
PARSE = "sbin/pfctl/parse.y"
MAN = "share/man/man5/pf.conf.5"
REGRESS = "regress/sbin/pfctl/pf116.in"

SERIES = """release = "7.6"
[topics.pf-mape]
subject = "pf: map-e-portset pool option"
rationale = '''
MAP-E customer edges must translate source ports into the port set their ISP assigned, or their traffic is dropped
by the border relay.  This adds a pool option that does it.

It changes struct pf_pool.
'''

[[patch]]
name = "pf"
topic = "pf-mape"
path = "pf.diff"
"""


def _series(tmp_path: Path, tree: Path, edited: Path, files: list[str]) -> series.Series:
    d = tmp_path / "series"
    d.mkdir(exist_ok=True)
    (d / "pf.diff").write_text(diff_of(tree, edited, files))
    (d / "s.toml").write_text(SERIES)
    return series.load(str(d / "s.toml"))


def _good_edit(edited: Path) -> list[str]:
    edit(edited / LB, "\t\treturn (5);\n", "\t\treturn (5);\n\tif (x == 0)\n\t\treturn (-1);\n")
    edit(edited / PARSE, "rule\t\t: NAT\n", "rule\t\t: NAT\n\t\t| NAT MAPEPORTSET\n")
    edit(edited / MAN, "Translation rules rewrite addresses and ports.\n",
         "Translation rules rewrite addresses and ports.\nThe map-e-portset option limits ports to a port set.\n")
    (edited / REGRESS).write_text("match out on gif0 nat-to (gif0) map-e-portset 6/6/63\n")
    return [LB, PARSE, MAN, REGRESS]


def _texts(s: series.Series) -> dict[str, str]:
    return {p.name: series.patch_text(p) for p in s.patches}


@pytest.mark.skipif(not mandoc.available(), reason="mandoc is not installed")
def test_clean_topic_passes_and_mail_is_ready(tree: Path, twin: Path, tmp_path: Path, _private_cache: Path) -> None:
    s = _series(tmp_path, tree, twin, _good_edit(twin))
    run = _private_cache / "runs" / "e2e-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"kind": "e2e", "verdict": "passed", "os": "OpenBSD",
                                                  "release": "7.6", "arch": "amd64", "scenario": "cosmote-like"}))
    sub = submission.prepare(s, _texts(s), "pf-mape", tree=tree, record=submission.latest_run_record())
    assert sub.ok and sub.findings == [], sub.checks_text()
    head, _, rest = sub.mail.partition("\n\n")
    assert head == "To: tech@openbsd.org\nSubject: pf: map-e-portset pool option"
    prose = rest.split("\nIndex: ")[0]
    assert all(len(line) <= 72 for line in prose.splitlines())
    assert "Tested on OpenBSD 7.6 amd64, e2e against the cosmote-like scenario." in sub.mail
    assert "\nok?\n\nIndex: regress/sbin/pfctl/pf116.in\n" in sub.mail
    assert "RCS file: /cvs/src/sys/net/pf_lb.c,v\nretrieving revision 1.76\ndiff -u -p -r1.76 pf_lb.c\n" in sub.diff
    assert "all checks passed" in sub.checks_text()


@pytest.mark.skipif(not mandoc.available(), reason="mandoc is not installed")
def test_seeded_errors_are_caught(tree: Path, twin: Path, tmp_path: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5);\n\tif(x == 0)\n\t\treturn -1; // bail\n")
    edit(twin / PARSE, "rule\t\t: NAT\n", "rule\t\t: NAT\n\t\t| NAT MAPEPORTSET\n")
    edit(twin / MAN, "It is read at boot.\n", "It is read at boot. It is also read by pfctl.\n")
    s = _series(tmp_path, tree, twin, [LB, PARSE, MAN])
    sub = submission.prepare(s, _texts(s), "pf-mape", tree=tree)
    assert not sub.ok
    checks = {(f.check, f.path) for f in sub.findings}
    assert ("style", LB) in checks
    assert ("mandoc", MAN) in checks
    assert ("regress", PARSE) in checks
    messages = " ".join(f.message for f in sub.findings)
    assert "space after 'if'" in messages and "C++ style" in messages and "return (x);" in messages
    assert "new sentence, new line" in messages
    assert "Tested on: FILL IN" in sub.mail


def test_does_not_apply_is_reported(tree: Path, twin: Path, tmp_path: Path) -> None:
    files = _good_edit(twin)
    s = _series(tmp_path, tree, twin, files)
    target = tmp_path / "moved"
    shutil.copytree(tree, target)
    edit(target / LB, "\t\treturn (5);\n", "\t\treturn (50);\n")
    sub = submission.prepare(s, _texts(s), "pf-mape", tree=target)
    [f] = [f for f in sub.findings if f.check == "applies"]
    assert f.path == LB and "does not apply" in f.message and f.severity == "error"
    assert sub.diff == _texts(s)["pf"]  # not regenerated: the original text goes in


def test_without_tree(tree: Path, twin: Path, tmp_path: Path) -> None:
    s = _series(tmp_path, tree, twin, _good_edit(twin))
    sub = submission.prepare(s, _texts(s), "pf-mape")
    assert [(f.check, f.severity) for f in sub.findings] == [("mandoc", "warning")]
    assert sub.ok


def test_unknown_topic(tree: Path, twin: Path, tmp_path: Path) -> None:
    s = _series(tmp_path, tree, twin, _good_edit(twin))
    with pytest.raises(SubmissionError, match=r"topic 'x' is not in"):
        submission.prepare(s, _texts(s), "x")


def test_run_record_ignores_failures_and_other_kinds(tmp_path: Path) -> None:
    for name, verdict in (("a", "failed"), ("b", "passed")):
        d = tmp_path / "runs" / name  # $MAPELAB_RUNS, as the e2e suite lays runs out
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"kind": "e2e", "verdict": verdict, "tested_on": f"run {name}"}))
    assert submission.tested_on(submission.latest_run_record()) == "run b"
    assert submission.tested_on(None) is None
    # newer, but not a passing e2e verdict: a testbed run's record, and "pass" (which no code writes)
    for name, rec in (("c", {"kind": "testbed", "verdict": "passed", "tested_on": "run c"}),
                      ("d", {"kind": "e2e", "verdict": "pass", "tested_on": "run d"})):
        d = tmp_path / "runs" / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(rec))
    assert submission.tested_on(submission.latest_run_record()) == "run b"
