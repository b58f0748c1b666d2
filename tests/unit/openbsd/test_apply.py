"""Applying patches: every hunk reported right (clean, offset, fuzz, failed with its reject)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapelab.openbsd.apply import apply_patch
from mapelab.openbsd.errors import PatchError

from .helpers import diff_of, edit

LB = "sys/net/pf_lb.c"


def _one_change(tree: Path, twin: Path) -> str:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    return diff_of(tree, twin, [LB])


def test_clean(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    rep = apply_patch(tree, patch)
    assert rep.ok and rep.written
    [h] = rep.hunks
    assert (h.status, h.offset, h.fuzz) == ("clean", 0, 0)
    assert (tree / LB).read_text() == (twin / LB).read_text()
    assert "hunk 1 clean" in rep.text()


def test_offset(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    edit(tree / LB, "#include <sys/types.h>\n", "#include <sys/types.h>\n" + "/* moved */\n" * 7)
    rep = apply_patch(tree, patch)
    [h] = rep.hunks
    assert (h.status, h.offset, h.fuzz) == ("offset", 7, 0)
    assert "offset +7" in h.describe()
    assert "\t\treturn (5 + 1);\n" in (tree / LB).read_text()


def test_offset_carries_to_later_hunks(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (3);\n", "\t\treturn (3 + 1);\n")
    edit(twin / LB, "\t\treturn (25);\n", "\t\treturn (25 + 1);\n")
    patch = diff_of(tree, twin, [LB])
    edit(tree / LB, "#include <sys/types.h>\n", "#include <sys/types.h>\n/* a */\n/* b */\n")
    rep = apply_patch(tree, patch)
    assert [(h.status, h.offset) for h in rep.hunks] == [("offset", 2), ("offset", 2)]


def test_fuzz(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    # the hunk's first context line is "func5(int x)": change it in the target only
    edit(tree / LB, "func5(int x)\n", "func5(int y)\n")
    rep = apply_patch(tree, patch)
    [h] = rep.hunks
    assert (h.status, h.fuzz) == ("fuzz", 1)
    assert "fuzz 1" in h.describe()
    text = (tree / LB).read_text()
    assert "func5(int y)\n{\n\tif (x > 5)\n\t\treturn (5 + 1);\n" in text


def test_reject(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    before = (tree / LB).read_text().replace("\t\treturn (5);\n", "\t\treturn (55);\n")
    (tree / LB).write_text(before)
    rep = apply_patch(tree, patch)
    [h] = rep.hunks
    assert h.status == "failed" and not rep.ok and not rep.written
    assert h.reject.startswith("@@ -") and "-\t\treturn (5);\n+\t\treturn (5 + 1);\n" in h.reject
    assert "FAILED" in rep.text() and "--- reject: sys/net/pf_lb.c hunk 1 ---" in rep.text()
    assert (tree / LB).read_text() == before  # all or nothing: untouched
    assert not (tree / (LB + ".rej")).exists()


def test_whitespace_is_never_ignored(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    edit(tree / LB, "\t\treturn (5);\n", "        return (5);\n")  # spaces instead of tabs
    rep = apply_patch(tree, patch, dry_run=True)
    assert rep.hunks[0].status == "failed"


def test_partial_writes_rej(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (3);\n", "\t\treturn (3 + 1);\n")
    edit(twin / LB, "\t\treturn (25);\n", "\t\treturn (25 + 1);\n")
    patch = diff_of(tree, twin, [LB])
    edit(tree / LB, "\t\treturn (25);\n", "\t\treturn (26);\n")
    rep = apply_patch(tree, patch, partial=True)
    assert [h.status for h in rep.hunks] == ["clean", "failed"]
    assert "\t\treturn (3 + 1);\n" in (tree / LB).read_text()
    assert "return (25 + 1)" in (tree / (LB + ".rej")).read_text()


def test_dry_run_writes_nothing(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    before = (tree / LB).read_text()
    rep = apply_patch(tree, patch, dry_run=True)
    assert rep.ok and not rep.written
    assert (tree / LB).read_text() == before
    assert rep.files[0].new_text == (twin / LB).read_text()


def test_new_and_deleted_files(tree: Path, twin: Path) -> None:
    (twin / "regress/sbin/pfctl/pf116.in").write_text("match out nat-to (gif0)\n")
    (twin / "sbin/pfctl/pfctl_parser.c").unlink()
    patch = diff_of(tree, twin, ["regress/sbin/pfctl/pf116.in", "sbin/pfctl/pfctl_parser.c"])
    rep = apply_patch(tree, patch)
    assert rep.ok
    assert [f.created for f in rep.files] == [True, False]
    assert [f.deleted for f in rep.files] == [False, True]
    assert (tree / "regress/sbin/pfctl/pf116.in").read_text() == "match out nat-to (gif0)\n"
    assert not (tree / "sbin/pfctl/pfctl_parser.c").exists()


def test_new_file_that_exists_fails(tree: Path, twin: Path) -> None:
    (twin / "regress/sbin/pfctl/pf116.in").write_text("x\n")
    patch = diff_of(tree, twin, ["regress/sbin/pfctl/pf116.in"])
    (tree / "regress/sbin/pfctl/pf116.in").write_text("taken\n")
    rep = apply_patch(tree, patch, dry_run=True)
    assert rep.hunks[0].status == "failed" and "already exists" in rep.hunks[0].reason


def test_missing_file_fails(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin)
    (tree / LB).unlink()
    rep = apply_patch(tree, patch, dry_run=True)
    assert rep.hunks[0].status == "failed" and "does not exist" in rep.hunks[0].reason


def test_no_newline_at_end(tree: Path, twin: Path) -> None:
    (tree / "include/Makefile").write_text("a\nb")
    (twin / "include/Makefile").write_text("a\nb\nc")
    patch = diff_of(tree, twin, ["include/Makefile"])
    assert patch.count("\\ No newline at end of file") == 2
    apply_patch(tree, patch)
    assert (tree / "include/Makefile").read_text() == "a\nb\nc"


def test_strip_level(tree: Path, twin: Path) -> None:
    patch = _one_change(tree, twin).replace("--- sys/", "--- a/sys/").replace("+++ sys/", "+++ b/sys/")
    rep = apply_patch(tree, patch, strip=1)
    assert rep.ok and rep.hunks[0].status == "clean"


def test_path_escaping_tree_refused(tree: Path) -> None:
    patch = "--- ../evil.c\n+++ ../evil.c\n@@ -0,0 +1 @@\n+x\n"
    with pytest.raises(PatchError, match=r"leaves the tree"):
        apply_patch(tree, patch)


def test_not_a_patch(tree: Path) -> None:
    with pytest.raises(PatchError, match=r"no unified-diff hunks"):
        apply_patch(tree, "hello\n", name="x.patch")


def test_series_overlay_dry_run(tree: Path, twin: Path) -> None:
    """A second patch on top of the first applies in a dry run via the overlay."""
    p1 = _one_change(tree, twin)
    second = twin.parent / "second"
    import shutil

    shutil.copytree(twin, second)
    edit(second / LB, "\t\treturn (5 + 1);\n", "\t\treturn (5 + 2);\n")
    p2 = diff_of(twin, second, [LB])
    overlay: dict[str, str | None] = {}
    assert apply_patch(tree, p1, dry_run=True, overlay=overlay).ok
    assert apply_patch(tree, p2, dry_run=True, overlay=overlay).ok
    assert apply_patch(tree, p2, dry_run=True).hunks[0].status == "failed"  # without the first: fails


def _gnu_patch(tree: Path, patch: str) -> str:
    import shutil
    import subprocess

    gnu = shutil.which("patch")
    if not gnu:
        pytest.skip("patch(1) not installed: nothing to compare with")
    proc = subprocess.run([gnu, "-p0", "--dry-run", "--no-backup-if-mismatch"], input=patch, text=True, cwd=tree,
                          capture_output=True)
    return proc.stdout


@pytest.mark.parametrize("case", ["offset", "fuzz"])
def test_agrees_with_patch1(tree: Path, twin: Path, case: str) -> None:
    """Our verdict matches what patch(1) says for the same tree and patch (it is only a cross-check)."""
    patch = _one_change(tree, twin)
    if case == "offset":
        edit(tree / LB, "#include <sys/types.h>\n", "#include <sys/types.h>\n" + "/* moved */\n" * 7)
    else:
        edit(tree / LB, "func5(int x)\n", "func5(int y)\n")
    gnu = _gnu_patch(tree, patch)
    [h] = apply_patch(tree, patch, dry_run=True).hunks
    if case == "offset":
        assert "offset 7 lines" in gnu and (h.status, h.offset) == ("offset", 7)
    else:
        assert "with fuzz 1" in gnu and (h.status, h.fuzz) == ("fuzz", 1)
