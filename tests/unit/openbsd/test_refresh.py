"""refresh: cvs diff -uNp shape, exact headers, and the apply → edit → refresh → apply round trip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mapelab.openbsd import refresh
from mapelab.openbsd.apply import apply_patch

from .helpers import diff_of, edit

LB = "sys/net/pf_lb.c"
EDIT_TIME = 1795000000  # 18 Nov 2026 ...


def _mtime(p: Path, t: int = EDIT_TIME) -> None:
    os.utime(p, (t, t))


def test_headers_are_exact(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    _mtime(twin / LB)
    text = refresh.cvs_diff(tree, twin, [LB])
    date = refresh.cvs_date(EDIT_TIME)
    assert text.split("\n")[:7] == [
        "Index: sys/net/pf_lb.c",
        "=" * 67,
        "RCS file: /cvs/src/sys/net/pf_lb.c,v",
        "retrieving revision 1.76",
        "diff -u -p -r1.76 pf_lb.c",
        "--- sys/net/pf_lb.c\t5 Jan 2025 12:36:48 -0000\t1.76",
        f"+++ sys/net/pf_lb.c\t{date}",
    ]
    # -p: the function line is the last line before the hunk that starts with a letter
    assert text.split("\n")[7].startswith("@@ -") and text.split("\n")[7].endswith("@@ int")


def test_cvs_date_format() -> None:
    assert refresh.cvs_date(1736080608) == "5 Jan 2025 12:36:48 -0000"
    assert refresh.cvs_date(1668183128) == "11 Nov 2022 16:12:08 -0000"


def test_revision_from_cvs_entries(tree: Path, twin: Path) -> None:
    cvs = tree / "sys/net/CVS"
    cvs.mkdir()
    (cvs / "Entries").write_text("/pf_lb.c/1.80/Sun Jan  5 12:36:48 2025//\n/pfvar.h/1.541/x//\nD\n")
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    text = refresh.cvs_diff(tree, twin, [LB])
    assert "retrieving revision 1.80\ndiff -u -p -r1.80 pf_lb.c\n" in text


def test_unknown_revision_leaves_revision_lines_out(tree: Path, twin: Path) -> None:
    (tree / "include/Makefile").write_text("a\n")
    (twin / "include/Makefile").write_text("b\n")
    text = refresh.cvs_diff(tree, twin, ["include/Makefile"])
    assert "retrieving revision" not in text
    assert "RCS file: /cvs/src/include/Makefile,v\ndiff -u -p Makefile\n--- include/Makefile\t" in text


def test_new_file_shape(tree: Path, twin: Path) -> None:
    (twin / "regress/sbin/pfctl/pfail68.in").write_text("bad\n")
    _mtime(twin / "regress/sbin/pfctl/pfail68.in")
    text = refresh.cvs_diff(tree, twin, ["regress/sbin/pfctl/pfail68.in"])
    assert text == (
        "Index: regress/sbin/pfctl/pfail68.in\n" + "=" * 67 + "\n"
        "RCS file: regress/sbin/pfctl/pfail68.in\n"
        "diff -N regress/sbin/pfctl/pfail68.in\n"
        "--- /dev/null\t1 Jan 1970 00:00:00 -0000\n"
        f"+++ regress/sbin/pfctl/pfail68.in\t{refresh.cvs_date(EDIT_TIME)}\n"
        "@@ -0,0 +1 @@\n+bad\n"
    )


def test_function_line_is_first_40_chars() -> None:
    old = ["extern void\t\t\t pf_tbladdr_remove(struct pf_addr_wrap *);"] + [f"\tline{i};" for i in range(8)]
    new = [*old[:6], "\tnew;", *old[6:]]
    body = refresh.diff_lines(old, True, new, True)
    assert body[0] == "@@ -4,6 +4,7 @@ extern void\t\t\t pf_tbladdr_remove(struct "


def test_unchanged_file_gives_nothing(tree: Path, twin: Path) -> None:
    assert refresh.cvs_diff(tree, twin, [LB]) == ""


def test_whitespace_changes_are_changes(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5); \n")
    assert "+\t\treturn (5); \n" in refresh.cvs_diff(tree, twin, [LB])


def test_round_trip(tree: Path, twin: Path, tmp_path: Path) -> None:
    """apply → edit → refresh → apply to a pristine tree gives the edited tree."""
    pristine = tmp_path / "pristine"
    shutil.copytree(tree, pristine)
    # 1. a patch touching two files and adding one
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (5 + 1);\n")
    edit(twin / "sys/net/pfvar.h", "func2(int x)\n", "func2(int x, int y)\n")
    (twin / "regress/sbin/pfctl/pf116.in").write_text("match out on gif0 nat-to (gif0)\n")
    files = [LB, "sys/net/pfvar.h", "regress/sbin/pfctl/pf116.in"]
    first = diff_of(tree, twin, files)
    assert apply_patch(tree, first).ok
    # 2. edit the applied tree further (a review fix), 3. refresh against the pristine tree
    edit(tree / LB, "\t\treturn (25);\n", "\t\treturn (25 * 2);\n")
    edit(tree / "regress/sbin/pfctl/pf116.in", "gif0)\n", "gif0) map-e-portset 6/6/63\n")
    refreshed = refresh.cvs_diff(pristine, tree, files)
    # 4. the refreshed patch applied to another pristine copy gives exactly the edited tree
    target = tmp_path / "target"
    shutil.copytree(pristine, target)
    rep = apply_patch(target, refreshed)
    assert rep.ok and all(h.status == "clean" for h in rep.hunks)
    for rel in files:
        assert (target / rel).read_bytes() == (tree / rel).read_bytes(), rel


def test_changed_files(tree: Path, twin: Path) -> None:
    edit(twin / LB, "\t\treturn (5);\n", "\t\treturn (6);\n")
    (twin / "sys/net/new.h").write_text("x\n")
    assert refresh.changed_files(tree, twin, ["sys/net"]) == ["sys/net/new.h", LB]
