"""Which ``-p`` strip level a patch's paths fit in a tree: declared, and the one that works.

A series says ``strip = N`` for each patch; a wrong N makes every file "missing", which
reads like a stale patch rather than a typo.  Published patches come in both shapes — cvs
output with paths from /usr/src (``-p0``) and git output with ``a/`` ``b/`` (``-p1``) — so
mapelab looks: for each level it counts the files the patch modifies that exist there (or,
for a patch that only adds files, the new files whose directory exists there: a weaker sign,
used only then).  When the declared level fits fewer files than another, the check names both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .unidiff import FilePatch, strip_path

LEVELS = range(0, 4)


@dataclass(frozen=True)
class StripFit:
    """How many of a patch's files a strip level finds in a tree, with an example path."""

    strip: int
    found: int
    total: int
    example: str  # the first path as that level reads it


def fits(tree: Path, files: list[FilePatch], levels: range = LEVELS) -> list[StripFit]:
    """For each level: how many modified files exist (or, with none, how many new files' directories do)."""
    changed = [fp for fp in files if not fp.is_new]
    files = changed or files
    out: list[StripFit] = []
    for level in levels:
        found, example = 0, ""
        for fp in files:
            rel = fp.target(level)
            example = example or rel
            where = tree / rel
            if (where.parent.is_dir() if fp.is_new else where.is_file()):
                found += 1
        out.append(StripFit(level, found, len(files), example))
    return out


def warning(name: str, tree: Path, files: list[FilePatch], declared: int) -> str | None:
    """One line when another strip level fits more of the patch's files than ``declared``, else None."""
    if not files:
        return None
    results = fits(tree, files, range(0, max(max(LEVELS), declared) + 1))
    mine = next(r for r in results if r.strip == declared)
    best = max(results, key=lambda r: (r.found, -abs(r.strip - declared)))
    if best.found <= mine.found:
        return None
    first = next((fp for fp in files if not fp.is_new), files[0])
    shown = first.new_path if first.new_path != "/dev/null" else first.old_path
    return (f"{name}: at strip {declared} (-p{declared}) {mine.found} of {mine.total} paths exist in {tree} "
            f"(e.g. {shown} → {strip_path(shown, declared)}), at strip {best.strip} (-p{best.strip}) "
            f"{best.found} do ({strip_path(shown, best.strip)}); set strip = {best.strip} in the series")
