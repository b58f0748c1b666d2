"""mapelab predicts OpenBSD's patch(1) (usr.bin/patch/patch.c 1.74, pch.c 1.66): these pin where it
differs from GNU patch, the strip-level warning, failure reasons, and topic order.

Patches are made here by hand from our own lines; where GNU patch is installed the tests also
show GNU deciding otherwise, so the difference is measured, not assumed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit

from mapelab.openbsd import series, striplevel
from mapelab.openbsd.apply import apply_patch, openbsd_context, openbsd_patch_command
from mapelab.openbsd.errors import SeriesError
from mapelab.openbsd.unidiff import parse

from .helpers import diff_of, edit

LB = "sys/net/pf_lb.c"


def _gnu(tree: Path, patch: str, strip: int = 0) -> subprocess.CompletedProcess[str] | None:
    gnu = shutil.which("patch")
    if not gnu:
        return None
    return subprocess.run([gnu, f"-p{strip}", "--dry-run", "-t", "-N"], input=patch, text=True, cwd=tree,
                          capture_output=True)


def _file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "f.txt").write_text(text)
    return tmp_path / "t"


def test_fuzz_drops_lines_at_both_ends_whatever_they_are(tmp_path: Path) -> None:
    """Fuzz 1 leaves out the hunk's last old line even when it is a removal (patch_match()).

    The hunk ends in ``-d`` with no trailing context.  The file has ``X`` there: OpenBSD's patch
    matches a, b, c minus one line at each end, and removes X; GNU patch keeps removals and
    pins such a hunk to the end of the file, so it fails.
    """
    root = _file(tmp_path, "a\nb\nc\nX\ne\n")
    patch = "--- f.txt\n+++ f.txt\n@@ -1,4 +1,3 @@\n a\n b\n c\n-d\n"
    rep = apply_patch(root, patch, dry_run=True)
    [h] = rep.hunks
    assert (h.status, h.fuzz) == ("fuzz", 1)
    assert rep.files[0].new_text == "a\nb\nc\ne\n"
    gnu = _gnu(root, patch)
    if gnu is not None:
        assert gnu.returncode == 1 and "FAILED" in gnu.stdout


def test_fuzz_is_capped_by_leading_context(tmp_path: Path) -> None:
    """The most fuzz is min(2, context lines before the first change): 1 here, so fuzz 2 is never tried.

    GNU patch caps by the larger side (3) and applies with fuzz 2.
    """
    root = _file(tmp_path, "a\nb\nc\nd\nE\nF\ng\n")
    patch = "--- f.txt\n+++ f.txt\n@@ -2,5 +2,5 @@\n b\n-c\n+C\n d\n e\n f\n"
    [fp] = parse(patch)
    assert openbsd_context(fp.hunks[0]) == 1
    [h] = apply_patch(root, patch, dry_run=True).hunks
    assert h.status == "failed"
    assert "context line 4 of 5 ('e') does not match line 5 of the file ('E')" in h.reason
    gnu = _gnu(root, patch)
    if gnu is not None:
        assert gnu.returncode == 0 and "with fuzz 2" in gnu.stdout


def test_context_of_a_hunk_that_starts_with_a_change() -> None:
    """pch.c counts the run between the first and second change then; 100 when there is none."""
    [a] = parse("--- f\n+++ f\n@@ -1,4 +1,4 @@\n-a\n+A\n b\n-c\n+C\n d\n").pop().hunks
    [b] = parse("--- f\n+++ f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n").pop().hunks
    assert (openbsd_context(a), openbsd_context(b)) == (1, 100)


def test_offsets_are_total_displacements(tree: Path, twin: Path) -> None:
    """Three hunks moved by 7, 9 and 9 lines are reported 7, 9, 9 (OpenBSD's patch would print 7, 2, 7)."""
    for n in (3, 15, 25):
        edit(twin / LB, f"\t\treturn ({n});\n", f"\t\treturn ({n} + 1);\n")
    patch = diff_of(tree, twin, [LB])
    edit(tree / LB, "#include <sys/types.h>\n", "#include <sys/types.h>\n" + "/* a */\n" * 7)
    edit(tree / LB, "func10(int x)\n", "func10(int x)\n/* b */\n/* c */\n")
    rep = apply_patch(tree, patch, dry_run=True)
    assert [(h.status, h.offset) for h in rep.hunks] == [("offset", 7), ("offset", 9), ("offset", 9)]
    gnu = _gnu(tree, patch)
    if gnu is not None:
        said = [line.split("(")[1].rstrip(").") for line in gnu.stdout.splitlines() if "succeeded" in line]
        assert said == ["offset 7 lines", "offset 9 lines", "offset 9 lines"]


def test_failure_names_the_line_that_changed(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    patch = diff_of(tree, twin, [LB])
    edit(tree / LB, "func5(int x)\n{\n\tif (x > 5)\n", "func5(int x)\n{\n\tif (x >= 5)\n")
    edit(tree / LB, "func6(int x)\n", "func6(long x)\n")
    [h] = apply_patch(tree, patch, dry_run=True).hunks
    assert h.status == "failed"
    assert "context line 3 of 7 ('if (x > 5)') does not match line" in h.reason and "'if (x >= 5)'" in h.reason


def test_command_build_vm_runs() -> None:
    assert openbsd_patch_command(1, "/tmp/x.patch") == ["patch", "-t", "-N", "-E", "-p1", "-i", "/tmp/x.patch"]


def test_strip_warning_names_both_levels(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    (twin / "regress/sbin/pfctl/pf116.in").write_text("pass\n")
    cvs = diff_of(tree, twin, [LB, "regress/sbin/pfctl/pf116.in"])
    git = cvs.replace("--- sys/", "--- a/sys/").replace("+++ sys/", "+++ b/sys/").replace(
        "+++ regress/", "+++ b/regress/")
    assert striplevel.warning("p", tree, parse(cvs), 0) is None
    assert striplevel.warning("p", tree, parse(git), 1) is None
    w = striplevel.warning("dhcp6", tree, parse(cvs), 1)
    assert w is not None and "at strip 1 (-p1) 0 of 1 paths exist" in w and "at strip 0 (-p0) 1 do" in w
    assert "set strip = 0" in w
    w = striplevel.warning("mape79", tree, parse(git), 0)
    assert w is not None and "at strip 0 (-p0) 0 of 1" in w and "at strip 1 (-p1) 1 do" in w
    assert "(e.g. b/sys/net/pf_lb.c → b/sys/net/pf_lb.c)" in w


def test_patch_check_prints_the_strip_warning(tree: Path, twin: Path, tmp_path: Path, capsys) -> None:
    from mapelab.tasks import patches as tasks

    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    d = tmp_path / "s"
    d.mkdir()
    (d / "one.diff").write_text(diff_of(tree, twin, [LB]))
    (d / "s.toml").write_text('release = "7.6"\n[topics.t]\nsubject = "s"\nrationale = "r"\n'
                              '[[patch]]\nname = "one"\ntopic = "t"\npath = "one.diff"\nstrip = 2\n')
    with pytest.raises(Exit) as e:  # every hunk fails at -p2
        tasks.check.body(Context(), series=str(d / "s.toml"), tree=str(tree), json=True)
    assert e.value.code == 1
    captured = capsys.readouterr()
    [rep] = json.loads(captured.out)
    assert any("at strip 2 (-p2) 0 of 1" in w and "at strip 0 (-p0) 1 do" in w for w in rep["warnings"])
    assert "warning: one: at strip 2" in captured.err


HEAD = 'release = "7.8"\n'
TOPICS = "".join(f'[topics.{t}]\nsubject = "{t}"\nrationale = "r"\n' for t in ("core", "ctl", "regress"))
PATCHES = "".join(f'[[patch]]\nname = "{t}"\ntopic = "{t}"\npath = "{t}.diff"\n' for t in ("regress", "core", "ctl"))


def test_topic_order(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(HEAD + TOPICS + PATCHES)
    assert series.load(str(f)).ordered_topics == ["regress", "core", "ctl"]  # the order patches apply
    f.write_text(HEAD + 'topic_order = ["core", "ctl", "regress"]\n' + TOPICS + PATCHES)
    assert series.load(str(f)).ordered_topics == ["core", "ctl", "regress"]


@pytest.mark.parametrize(("order", "message"), [
    ('["core", "ctl"]', "missing regress"),
    ('["core", "ctl", "regress", "core"]', "repeated core"),
    ('["core", "ctl", "regress", "pf"]', "unknown pf"),
    ('"core"', "must be a list"),
])
def test_bad_topic_order(tmp_path: Path, order: str, message: str) -> None:
    f = tmp_path / "s.toml"
    f.write_text(HEAD + f"topic_order = {order}\n" + TOPICS + PATCHES)
    with pytest.raises(SeriesError, match=message):
        series.load(str(f))


def test_submission_writes_mails_in_topic_order(tree: Path, tmp_path: Path, capsys) -> None:
    """Three pieces, three mails, in topic_order (not file or patch order)."""
    from mapelab.tasks import patches as tasks

    d = tmp_path / "s"
    d.mkdir()
    for n, t in enumerate(("core", "ctl", "regress")):
        twin = tmp_path / f"e{n}"
        shutil.copytree(tree, twin)
        edit(twin / LB, f"\t\treturn ({n + 3});\n", f"\t\treturn ({n + 3} + 1);\n")
        (d / f"{t}.diff").write_text(diff_of(tree, twin, [LB]))
    (d / "s.toml").write_text(HEAD + 'topic_order = ["core", "ctl", "regress"]\n' + TOPICS + PATCHES)
    out = tmp_path / "mails"
    tasks.submission.body(Context(), series=str(d / "s.toml"), tree=str(tree), out=str(out), json=True)
    rows = json.loads(capsys.readouterr().out)
    assert [(r["order"], r["topic"]) for r in rows] == [(1, "core"), (2, "ctl"), (3, "regress")]
    assert all((out / f"{t}.mail").is_file() for t in ("core", "ctl", "regress"))


def test_status_table_from_check_json(series_file_for_table: tuple[Path, Path], capsys) -> None:
    """The docs table is regenerated from patch.check --json: one row per patch, a cell per tree."""
    from mapelab.openbsd import status_table
    from mapelab.tasks import patches as tasks

    series_path, tree = series_file_for_table
    tasks.check.body(Context(), series=str(series_path), tree=str(tree), json=True)
    clean = capsys.readouterr().out
    edit(tree / LB, "\t\treturn (5);\n", "\t\treturn (55);\n")
    with pytest.raises(Exit):
        tasks.check.body(Context(), series=str(series_path), tree=str(tree), json=True)
    broken = capsys.readouterr().out
    out_dir = series_path.parent
    (out_dir / "a.json").write_text(clean)
    (out_dir / "b.json").write_text(broken)
    assert status_table.main([f"7.8={out_dir / 'a.json'}", f"7.9={out_dir / 'b.json'}"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "| patch | 7.8 | 7.9 |"
    row = text.splitlines()[2]
    assert row.startswith("| one | clean (1 hunks) | **1 of 1 hunks fail**: sys/net/pf_lb.c hunk 1: removed line")
    assert status_table.main(["nonsense"]) == 2


@pytest.fixture
def series_file_for_table(tree: Path, twin: Path, tmp_path: Path) -> tuple[Path, Path]:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    d = tmp_path / "tbl"
    d.mkdir()
    (d / "one.diff").write_text(diff_of(tree, twin, [LB]))
    (d / "s.toml").write_text('release = "7.6"\n[topics.t]\nsubject = "s"\nrationale = "r"\n'
                              '[[patch]]\nname = "one"\ntopic = "t"\npath = "one.diff"\n')
    return d / "s.toml", tree
