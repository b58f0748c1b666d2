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
    _run(_private_cache / "runs", "e2e-1", _openbsd_run(submission.patch_hashes(s, _texts(s)), ["pf-mape"]))
    sub = submission.prepare(s, _texts(s), "pf-mape", tree=tree, runs=[_private_cache / "runs"])
    assert sub.ok and sub.findings == [], sub.checks_text()
    head, _, rest = sub.mail.partition("\n\n")
    assert head == "To: tech@openbsd.org\nSubject: pf: map-e-portset pool option"
    prose = rest.split("\nIndex: ")[0]
    assert all(len(line) <= 72 for line in prose.splitlines())
    assert "Tested on OpenBSD 7.9 amd64, booted in QEMU with these diffs applied" in " ".join(sub.mail.split())
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
    assert "Not yet tested on a booted kernel" in sub.mail


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


def _run(root: Path, name: str, rec: dict) -> None:
    d = root / name  # as the e2e suite lays runs out under $MAPELAB_RUNS
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"kind": "e2e", **rec}))


def _openbsd_run(hashes: dict[str, str], topics: list[str], verdict: str = "passed") -> dict:
    ce = {"backend": "openbsd", "profile": "static", "release": "7.9", "arch": "amd64",
          "patches": [{"name": n, "sha256": h} for n, h in hashes.items()], "exercises_topics": topics}
    return {"verdict": verdict, "ce_backend": "openbsd", "scenarios": ["cosmote-like"],
            "counts": {"passed": 40, "unsupported": 3}, "gate": {"verdict": "open"},
            "ces": {"cosmote-like/ce1": {"ce": ce, "system": {"kern.version": "OpenBSD 7.9 (GENERIC.MP) #1: x\n"}}}}


def test_a_mail_cites_only_a_booted_openbsd_run_of_the_same_patches(tree: Path, twin: Path, tmp_path: Path) -> None:
    s = _series(tmp_path, tree, twin, _good_edit(twin))
    texts = _texts(s)
    runs = tmp_path / "runs"
    hashes = submission.patch_hashes(s, texts)

    def mail_line() -> str:
        mail = submission.prepare(s, texts, "pf-mape", runs=[runs]).mail
        return next(ln for ln in mail.splitlines() if ln.startswith(("Tested on", "Not yet tested")))

    _run(runs, "a", {"verdict": "passed", "ce_backend": "linux", "ces": {"x": {"ce": {"backend": "linux"}}}})
    assert mail_line().startswith("Not yet tested on a booted kernel")  # the reference CE is no evidence
    _run(runs, "b", _openbsd_run({"pf": "0" * 64}, ["pf-mape"]))
    assert mail_line().startswith("Not yet tested on a booted kernel")  # other patch bytes
    _run(runs, "c", _openbsd_run(hashes, ["pf-mape"], verdict="failed"))
    assert mail_line().startswith("Not yet tested on a booted kernel")  # a failed run
    _run(runs, "d", _openbsd_run(hashes, ["dhcp6leased-mape"]))
    assert mail_line().startswith("Not yet tested on a booted kernel")  # a profile not exercising the topic
    _run(runs, "e", _openbsd_run(hashes, ["pf-mape"]))
    line = mail_line()
    assert line.startswith("Tested on OpenBSD 7.9 amd64, booted in QEMU with these diffs"), line
    ev = submission.evidence_for(s, texts, "pf-mape", [runs])
    assert ev is not None and ev["run_dir"].endswith("/e")
    text = submission.tested_on(ev) or ""
    assert "OpenBSD 7.9 (GENERIC.MP) #1" in text and "40 passed, 3 unsupported" in text and "gate open" in text
