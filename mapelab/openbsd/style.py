"""style(9) checks on the lines a patch adds to C sources — the nits tech@ reviewers point out first.

Only added lines are checked: a diff is judged on what it brings, and OpenBSD files have
their own history of exceptions.  Checks: 80 columns (tabs count to the next multiple of 8),
indentation with tabs (a second-level indent of four spaces after tabs is fine), ``return (x);``,
a space after ``if``/``for``/``while``/``switch``/``return``, no ``//`` comments, no trailing
whitespace.  String and character literals are blanked before the code checks, so text inside
them never triggers a finding.
"""

from __future__ import annotations

import re

from .findings import Finding
from .unidiff import FilePatch, Hunk

C_SUFFIXES = (".c", ".h", ".y", ".l")
_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_KEYWORD_PAREN = re.compile(r"\b(if|for|while|switch|return)\(")
_RETURN_BARE = re.compile(r"\breturn\s+(?!\()[^;\s]")
_BAD_INDENT = re.compile(r"^(\t* {8,}|\t* +\t)")


def columns(line: str) -> int:
    """Display width with 8-column tabs."""
    return len(line.expandtabs(8))


def _code(line: str) -> str:
    """The line with string/char literals blanked and a trailing /* */ comment removed."""
    code = _LITERAL.sub('""', line)
    return re.sub(r"/\*.*?\*/", "", code)


def check_line(path: str, n: int, line: str) -> list[Finding]:
    """style(9) findings for one added line of a C file."""
    out: list[Finding] = []
    width = columns(line)
    if width > 80:
        out.append(Finding("style", path, n, f"line is {width} columns; style(9) wants at most 80"))
    if line != line.rstrip():
        out.append(Finding("style", path, n, "trailing whitespace"))
    stripped = line.lstrip()
    if stripped.startswith(("*", "/*")):
        return out  # comment text: only width and trailing space matter
    if _BAD_INDENT.match(line) or (line.startswith(" ") and stripped and not stripped.startswith("*")):
        out.append(Finding("style", path, n, "indent with tabs (second-level indent: tabs then 4 spaces)"))
    code = _code(line)
    if "//" in code:
        out.append(Finding("style", path, n, "C++ style // comment; use /* */"))
    m = _KEYWORD_PAREN.search(code)
    if m:
        out.append(Finding("style", path, n, f"no space after '{m.group(1)}'; write '{m.group(1)} ('"))
    if _RETURN_BARE.search(code):
        out.append(Finding("style", path, n, "return value without parentheses; write 'return (x);'"))
    return out


def check_patch(fp: FilePatch, path: str) -> list[Finding]:
    """style(9) findings for every added line of one file patch (C files only)."""
    if not path.endswith(C_SUFFIXES):
        return []
    out: list[Finding] = []
    for n, text in fp.added_lines():
        out.extend(check_line(path, n, text))
    return out


def whitespace_only(h: Hunk) -> bool:
    """True when a hunk's removed and added lines differ only in whitespace (a ``diff -b`` smell)."""
    removed = [t for tag, t in h.lines if tag == "-"]
    added = [t for tag, t in h.lines if tag == "+"]
    if not removed and not added:
        return False
    squash = lambda lines: "".join("".join(t.split()) for t in lines)  # noqa: E731
    return squash(removed) == squash(added) and removed != added


def check_whitespace_hunks(fp: FilePatch, path: str) -> list[Finding]:
    """Flag hunks that change only whitespace: they hide the real change from a reviewer."""
    return [
        Finding("whitespace", path, h.new_start, f"hunk {n} changes only whitespace; drop it or send it separately",
                "warning")
        for n, h in enumerate(fp.hunks, 1)
        if whitespace_only(h)
    ]
