"""style(9) and whitespace checks: seeded errors are caught, clean code passes."""

from __future__ import annotations

import pytest

from mapelab.openbsd import style
from mapelab.openbsd.unidiff import parse

CLEAN = [
    "int",
    "pf_get_sport_mape(struct pf_pdesc *pd, u_int16_t *port)",
    "{",
    "\tu_int16_t\tlow, high;",
    "",
    "\tif (pd == NULL)",
    "\t\treturn (-1);",
    "\tfor (i = 0; i < n; i++)",
    "\t\tlow = high + sizeof(*port);",
    "\tprintf(\"see http://example.org // not a comment\");",
    "\t/* a comment that is fine */",
    "\tx = fn(a,",
    "\t    b);",
    "\treturn;",
    "}",
]


def _findings(lines: list[str]) -> list[str]:
    out = []
    for n, line in enumerate(lines, 1):
        out += [f.message for f in style.check_line("sys/net/pf_lb.c", n, line)]
    return out


def test_clean_passes() -> None:
    assert _findings(CLEAN) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("\t" + "x" * 75 + ";", "columns"),
        ("\treturn (0); ", "trailing whitespace"),
        ("\ti++; // count", "C++ style"),
        ("\tif(x)", "space after 'if'"),
        ("\twhile(x)", "space after 'while'"),
        ("\treturn x;", "return (x);"),
        ("\treturn(x);", "space after 'return'"),
        ("        x = 1;", "indent with tabs"),
        ("    x = 1;", "indent with tabs"),
        ("\t \tx = 1;", "indent with tabs"),
    ],
)
def test_seeded_errors(line: str, message: str) -> None:
    found = _findings([line])
    assert any(message in f for f in found), found


def test_only_added_c_lines_checked() -> None:
    patch = (
        "--- sys/net/pf_lb.c\n+++ sys/net/pf_lb.c\n@@ -1,2 +1,3 @@\n return x;\n-\tif(a)\n+\tif (a)\n+\ty = 1; // hi\n"
        "--- share/man/man5/pf.conf.5\n+++ share/man/man5/pf.conf.5\n@@ -1 +1 @@\n-a\n+// not C\n"
    )
    c, man = parse(patch)
    found = style.check_patch(c, "sys/net/pf_lb.c")
    assert [(f.line, f.message) for f in found] == [(3, "C++ style // comment; use /* */")]
    assert style.check_patch(man, "share/man/man5/pf.conf.5") == []


def test_whitespace_only_hunk() -> None:
    patch = (
        "--- a.c\n+++ a.c\n@@ -1,2 +1,2 @@\n-\tint  x;\n+\tint x;\n \ty;\n"
        "@@ -10,2 +10,2 @@\n-\tint a;\n+\tint b;\n \tz;\n"
    )
    [fp] = parse(patch)
    found = style.check_whitespace_hunks(fp, "a.c")
    assert [(f.line, f.severity) for f in found] == [(1, "warning")]
    assert "hunk 1 changes only whitespace" in found[0].message
