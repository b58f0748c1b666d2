"""Regenerate a patch from an edited tree, in the shape ``cvs diff -uNp`` gives from /usr/src.

A tech@ reviewer applies a diff with ``cd /usr/src && patch -p0``, so each file is written as::

    Index: sys/net/pf_lb.c
    ===================================================================
    RCS file: /cvs/src/sys/net/pf_lb.c,v
    retrieving revision 1.76
    diff -u -p -r1.76 pf_lb.c
    --- sys/net/pf_lb.c\t5 Jan 2025 12:36:48 -0000\t1.76
    +++ sys/net/pf_lb.c\t26 Nov 2026 10:00:00 -0000
    @@ -120,6 +120,7 @@ pf_get_sport(struct pf_pdesc *pd, struct

The revision comes from ``CVS/Entries`` beside the file or, failing that, the file's
``$OpenBSD: name,v 1.76 2025/01/05 12:36:48 … $`` tag; without either the revision lines are
left out.  Hunks have three lines of context and a ``-p`` function line (the last line before
the hunk that starts with a letter, ``_`` or ``$``, first 40 characters).  Comparison is
exact: whitespace changes are changes.
"""

from __future__ import annotations

import calendar
import difflib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .apply import ENC, split_lines

SEP = "=" * 67
_OPENBSD_TAG = re.compile(r"\$OpenBSD: \S+,v (?P<rev>\d+(?:\.\d+)+) (?P<date>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ")
_FUNC = re.compile(r"^[A-Za-z_$]")


@dataclass(frozen=True)
class Revision:
    """What we know of a file's CVS revision: its number and, when known, its date (epoch)."""

    number: str
    date: float | None = None


def revision_of(tree: Path, rel: str) -> Revision | None:
    """The CVS revision of ``rel`` in the pristine ``tree``, from CVS/Entries or its $OpenBSD$ tag."""
    path = tree / rel
    entries = path.parent / "CVS" / "Entries"
    if entries.is_file():
        for line in entries.read_text(errors="replace").splitlines():
            parts = line.split("/")
            if len(parts) >= 3 and parts[1] == path.name and parts[2] and not parts[2].startswith("-"):
                return Revision(parts[2])
    if path.is_file():
        head = path.read_bytes()[:4096].decode(*ENC)
        m = _OPENBSD_TAG.search(head)
        if m:
            epoch = calendar.timegm(time.strptime(m.group("date"), "%Y/%m/%d %H:%M:%S"))
            return Revision(m.group("rev"), epoch)
    return None


def cvs_date(epoch: float) -> str:
    """cvs's diff date: ``5 Jan 2025 12:36:48 -0000`` (UTC, day not zero-padded)."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday} {time.strftime('%b %Y %H:%M:%S', t)} -0000"


def _range(start: int, stop: int) -> str:
    """Unified-diff range of the 0-based slice [start, stop)."""
    length = stop - start
    first = start + 1
    if length == 1:
        return str(first)
    if length == 0:
        first -= 1
    return f"{first},{length}"


def _function_line(old: list[str], before: int) -> str:
    for i in range(before - 1, -1, -1):
        if _FUNC.match(old[i]):
            return " " + old[i][:40]
    return ""


def diff_lines(old: list[str], old_eol: bool, new: list[str], new_eol: bool, context: int = 3) -> list[str]:
    """Unified hunks (``@@`` lines and bodies) between two line lists, with -p function lines."""
    # a line without a final newline differs from the same text with one: compare with a marker
    a = [*old[:-1], old[-1] + ("" if old_eol else "\0noeol")] if old else []
    b = [*new[:-1], new[-1] + ("" if new_eol else "\0noeol")] if new else []
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    out: list[str] = []
    for group in sm.get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@{_function_line(old, i1)}")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                for k in range(a1, a2):
                    out.append(" " + old[k])
                    if k == len(old) - 1 and not old_eol:
                        out.append("\\ No newline at end of file")
                continue
            for k in range(a1, a2):
                out.append("-" + old[k])
                if k == len(old) - 1 and not old_eol:
                    out.append("\\ No newline at end of file")
            for k in range(b1, b2):
                out.append("+" + new[k])
                if k == len(new) - 1 and not new_eol:
                    out.append("\\ No newline at end of file")
    return out


def _read(path: Path) -> str | None:
    return path.read_bytes().decode(*ENC) if path.is_file() else None


def cvs_diff_file(pristine: Path, edited: Path, rel: str, *, repo_root: str = "/cvs/src") -> str:
    """The ``cvs diff -uNp`` text for one file (empty when it did not change)."""
    before, after = _read(pristine / rel), _read(edited / rel)
    if before == after:
        return ""
    old, old_eol = split_lines(before or "")
    new, new_eol = split_lines(after or "")
    body = diff_lines(old, old_eol, new, new_eol)
    if not body:
        return ""
    name = rel.rsplit("/", 1)[-1]
    head = [f"Index: {rel}", SEP]
    if before is None:  # added file: cvs diff -N shape
        head += [f"RCS file: {rel}", f"diff -N {rel}", "--- /dev/null\t1 Jan 1970 00:00:00 -0000"]
    else:
        rev = revision_of(pristine, rel)
        old_date = cvs_date(rev.date if rev and rev.date else (pristine / rel).stat().st_mtime)
        head.append(f"RCS file: {repo_root}/{rel},v")
        if rev:
            head += [f"retrieving revision {rev.number}", f"diff -u -p -r{rev.number} {name}",
                     f"--- {rel}\t{old_date}\t{rev.number}"]
        else:
            head += [f"diff -u -p {name}", f"--- {rel}\t{old_date}"]
    if after is None:
        head.append("+++ /dev/null\t1 Jan 1970 00:00:00 -0000")
    else:
        head.append(f"+++ {rel}\t{cvs_date((edited / rel).stat().st_mtime)}")
    return "\n".join(head + body) + "\n"


def cvs_diff(pristine: Path, edited: Path, files: list[str], *, repo_root: str = "/cvs/src") -> str:
    """The ``cvs diff -uNp`` text for ``files`` (paths relative to /usr/src), in sorted order."""
    return "".join(cvs_diff_file(pristine, edited, rel, repo_root=repo_root) for rel in sorted(set(files)))


def changed_files(pristine: Path, edited: Path, under: list[str]) -> list[str]:
    """Files that differ between the trees below the given sub-directories (added ones too).

    Walking all of /usr/src is slow; callers pass the directories a series touches.
    """
    found: set[str] = set()
    for sub in under:
        for root in (pristine, edited):
            base = root / sub
            if base.is_file():
                found.add(sub)
                continue
            if not base.is_dir():
                continue
            for p in base.rglob("*"):
                if p.is_file() and "CVS" not in p.parts and not p.name.endswith((".orig", ".rej")):
                    found.add(p.relative_to(root).as_posix())
    return sorted(rel for rel in found if _read(pristine / rel) != _read(edited / rel))
