"""The unified-diff parser: cvs headers, git prefixes, new files, no-newline markers, bad input."""

from __future__ import annotations

import pytest

from mapelab.openbsd.errors import PatchError
from mapelab.openbsd.unidiff import parse, strip_path

CVS = """Some mail prose before the diff.

Index: sys/net/pfvar.h
===================================================================
RCS file: /cvs/src/sys/net/pfvar.h,v
retrieving revision 1.540
diff -u -p -r1.540 pfvar.h
--- sys/net/pfvar.h\t5 Jan 2025 12:36:48 -0000\t1.540
+++ sys/net/pfvar.h\t26 Nov 2026 10:00:00 -0000
@@ -10,3 +10,4 @@ struct pf_pool {
 \tint a;
+\tint b;
 \tint c;
 \tint d;
Index: regress/x.in
===================================================================
RCS file: regress/x.in
diff -N regress/x.in
--- /dev/null\t1 Jan 1970 00:00:00 -0000
+++ regress/x.in\t26 Nov 2026 10:00:00 -0000
@@ -0,0 +1 @@
+pass
\\ No newline at end of file
"""


def test_cvs_headers() -> None:
    a, b = parse(CVS)
    assert (a.index, a.revision, a.target(0)) == ("sys/net/pfvar.h", "1.540", "sys/net/pfvar.h")
    [h] = a.hunks
    assert (h.old_start, h.old_len, h.new_start, h.new_len, h.section) == (10, 3, 10, 4, " struct pf_pool {")
    assert a.added_lines() == [(11, "\tint b;")]
    assert b.is_new and b.target(0) == "regress/x.in"
    assert b.hunks[0].new_no_eol and not b.hunks[0].old_no_eol


def test_git_prefixes() -> None:
    [fp] = parse("diff --git a/x/y.c b/x/y.c\n--- a/x/y.c\n+++ b/x/y.c\n@@ -1 +1 @@\n-a\n+b\n")
    assert fp.target(1) == "x/y.c"


def test_render_round_trips() -> None:
    [fp] = parse(CVS)[:1]
    assert fp.hunks[0].render() == "@@ -10,3 +10,4 @@ struct pf_pool {\n \tint a;\n+\tint b;\n \tint c;\n \tint d;\n"


def test_truncated_hunk() -> None:
    with pytest.raises(PatchError, match="truncated"):
        parse("--- a\n+++ a\n@@ -1,3 +1,3 @@\n a\n-b\n")


def test_bad_line_in_hunk() -> None:
    with pytest.raises(PatchError, match="do not match"):
        parse("--- a\n+++ a\n@@ -1,2 +1,2 @@\n a\n?b\n")


def test_header_without_hunk() -> None:
    with pytest.raises(PatchError, match="no @@ hunk"):
        parse("--- a\n+++ a\nnothing\n")


def test_strip_keeps_the_last_component_like_openbsd() -> None:
    """util.c fetchname(): a path shorter than -pN keeps its basename instead of failing."""
    assert strip_path("a/b", 2) == "b"
    assert strip_path("Makefile", 1) == "Makefile"
    assert strip_path("a//b/./c", 1) == "b/c"
    with pytest.raises(PatchError, match="not a file path"):
        strip_path("/", 0)
