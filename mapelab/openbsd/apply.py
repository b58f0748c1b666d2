"""Apply a parsed patch to a tree and report every hunk: clean, offset N, fuzz N or failed.

The matcher follows the behaviour people know from ``patch(1)`` — look for the hunk's old
lines at the expected line, then ever further away; if that fails, drop up to ``max_fuzz``
context lines at each end and search again — but compares lines exactly (never ignoring
whitespace: a ``diff -b`` artifact must show up, not be papered over).

By default nothing is written unless every hunk applies (a half-patched /usr/src is worse
than none); ``partial=True`` writes what applied and a ``FILE.rej`` beside each failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write
from .errors import PatchError
from .unidiff import FilePatch, Hunk, parse

ENC = ("utf-8", "surrogateescape")


@dataclass
class HunkResult:
    """How one hunk went.  ``status`` is clean, offset, fuzz or failed."""

    file: str
    number: int
    status: str
    offset: int = 0
    fuzz: int = 0
    line: int | None = None  # 1-based line in the patched file where the hunk landed
    reason: str = ""
    reject: str = ""

    def describe(self) -> str:
        where = f" at line {self.line}" if self.line else ""
        if self.status == "clean":
            return f"{self.file}: hunk {self.number} clean{where}"
        if self.status == "offset":
            return f"{self.file}: hunk {self.number} offset {self.offset:+d}{where}"
        if self.status == "fuzz":
            off = f" offset {self.offset:+d}" if self.offset else ""
            return f"{self.file}: hunk {self.number} fuzz {self.fuzz}{off}{where}"
        return f"{self.file}: hunk {self.number} FAILED ({self.reason})"


@dataclass
class FileResult:
    path: str
    hunks: list[HunkResult] = field(default_factory=list)
    created: bool = False
    deleted: bool = False
    new_text: str | None = None  # the patched content (None when deleted or nothing applied)

    @property
    def ok(self) -> bool:
        return all(h.status != "failed" for h in self.hunks)


@dataclass
class ApplyReport:
    """Every file and hunk of one patch against one tree."""

    patch: str
    files: list[FileResult] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def hunks(self) -> list[HunkResult]:
        return [h for f in self.files for h in f.hunks]

    def counts(self) -> dict[str, int]:
        out = {"clean": 0, "offset": 0, "fuzz": 0, "failed": 0}
        for h in self.hunks:
            out[h.status] += 1
        return out

    def text(self, rejects: bool = True) -> str:
        """The report for people: one line per hunk, then each reject in full."""
        lines = [f"{self.patch}:"]
        for f in self.files:
            if f.created:
                lines.append(f"  {f.path}: new file")
            if f.deleted:
                lines.append(f"  {f.path}: removed")
            lines.extend("  " + h.describe() for h in f.hunks)
        c = self.counts()
        lines.append(f"  {c['clean']} clean, {c['offset']} offset, {c['fuzz']} fuzz, {c['failed']} failed")
        if rejects:
            for h in self.hunks:
                if h.status == "failed" and h.reject:
                    lines.append(f"  --- reject: {h.file} hunk {h.number} ---")
                    lines.extend("  " + r for r in h.reject.rstrip("\n").split("\n"))
        return "\n".join(lines)


def split_lines(text: str) -> tuple[list[str], bool]:
    """Text → (lines without terminators, whether the last line ended with a newline)."""
    if text == "":
        return [], True
    eol = text.endswith("\n")
    lines = text.split("\n")
    if eol:
        lines.pop()
    return lines, eol


def join_lines(lines: list[str], eol: bool) -> str:
    if not lines:
        return ""
    return "\n".join(lines) + ("\n" if eol else "")


def _context_edges(h: Hunk) -> tuple[int, int]:
    lead = 0
    for tag, _ in h.lines:
        if tag != " ":
            break
        lead += 1
    trail = 0
    for tag, _ in reversed(h.lines):
        if tag != " ":
            break
        trail += 1
    if lead == len(h.lines):  # context only: never fuzz it away entirely
        return 0, 0
    return lead, trail


def _find(lines: list[str], old: list[str], expected: int, lower: int) -> int | None:
    """The position nearest ``expected`` (not before ``lower``) where ``old`` matches exactly."""
    n, k = len(lines), len(old)
    if k == 0:
        return max(lower, min(expected, n))
    limit = max(expected - lower, n - expected) + 1
    for d in range(limit + 1):
        for pos in (expected + d, expected - d) if d else (expected,):
            if lower <= pos <= n - k and lines[pos : pos + k] == old:
                return pos
    return None


def apply_to_lines(
    lines: list[str], eol: bool, fp: FilePatch, path: str, max_fuzz: int = 2
) -> tuple[list[str], bool, list[HunkResult]]:
    """Apply every hunk of ``fp`` to ``lines``; return the new lines, EOL flag and per-hunk results."""
    out = list(lines)
    results: list[HunkResult] = []
    delta = 0        # net lines added by hunks applied so far
    last_offset = 0  # where the previous hunk landed relative to its header: later ones likely moved too
    lower = 0        # hunks apply in order and never overlap
    for number, h in enumerate(fp.hunks, 1):
        lead, trail = _context_edges(h)
        placed = None
        for fuzz in range(0, max_fuzz + 1):
            cut_lead, cut_trail = min(fuzz, lead), min(fuzz, trail)
            if fuzz and cut_lead == 0 and cut_trail == 0:
                break
            body = h.lines[cut_lead : len(h.lines) - cut_trail]
            old = [t for tag, t in body if tag in " -"]
            new = [t for tag, t in body if tag in " +"]
            base = (h.old_start - 1 if h.old_len else h.old_start) + cut_lead + delta
            pos = _find(out, old, base + last_offset, lower)
            if pos is not None:
                placed = (pos, old, new, fuzz, pos - base)
                break
        if placed is None:
            results.append(HunkResult(path, number, "failed", reason="no place where its old lines match",
                                      reject=h.render()))
            continue
        pos, old, new, fuzz, offset = placed
        reaches_end = pos + len(old) == len(out)
        out[pos : pos + len(old)] = new
        if reaches_end and (h.old_no_eol or h.new_no_eol or old != new):
            eol = not h.new_no_eol
        delta += len(new) - len(old)
        last_offset = offset
        lower = pos + len(new)
        status = "fuzz" if fuzz else ("offset" if offset else "clean")
        results.append(HunkResult(path, number, status, offset=offset, fuzz=fuzz, line=pos + 1))
    return out, eol, results


def _read(path: Path) -> str:
    return path.read_bytes().decode(*ENC)


def apply_patch(
    tree: Path,
    patch_text: str,
    *,
    strip: int = 0,
    dry_run: bool = False,
    partial: bool = False,
    name: str = "patch",
    max_fuzz: int = 2,
    overlay: dict[str, str | None] | None = None,
) -> ApplyReport:
    """Apply ``patch_text`` to the tree at ``tree``.

    ``overlay`` holds file contents already changed by earlier patches of a series in a dry
    run (path → text, None = deleted); it is updated with this patch's results, so a whole
    series can be checked without touching the tree.
    """
    files = parse(patch_text, name)
    if not files:
        raise PatchError(f"{name}: no unified-diff hunks found; is it a diff (made with diff -u or cvs diff -u)?")
    report = ApplyReport(name)
    overlay = overlay if overlay is not None else {}
    for fp in files:
        rel = fp.target(strip)
        dest = tree_file(tree, rel)
        fr = FileResult(rel)
        if rel in overlay:
            current = overlay[rel]
        elif dest.is_file():
            current = _read(dest)
        else:
            current = None
        if current is None and not fp.is_new:
            for n, h in enumerate(fp.hunks, 1):
                fr.hunks.append(HunkResult(rel, n, "failed", reason=f"{rel} does not exist in the tree",
                                           reject=h.render()))
            report.files.append(fr)
            continue
        if current is not None and fp.is_new and current != "":
            for n, h in enumerate(fp.hunks, 1):
                fr.hunks.append(HunkResult(rel, n, "failed", reason=f"patch creates {rel} but it already exists",
                                           reject=h.render()))
            report.files.append(fr)
            continue
        fr.created = current is None
        lines, eol = split_lines(current or "")
        new_lines, new_eol, fr.hunks = apply_to_lines(lines, eol, fp, rel, max_fuzz)
        if fp.is_delete and not new_lines and fr.ok:
            fr.deleted = True
        else:
            fr.new_text = join_lines(new_lines, new_eol)
        report.files.append(fr)
    if dry_run or not (report.ok or partial):
        for fr in report.files:
            if fr.ok or partial:
                overlay[fr.path] = None if fr.deleted else fr.new_text
        return report
    for fr in report.files:
        dest = tree_file(tree, fr.path)
        if fr.deleted:
            dest.unlink(missing_ok=True)
        elif fr.new_text is not None and any(h.status != "failed" for h in fr.hunks):
            mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o644
            atomic_write(dest, fr.new_text.encode(*ENC), mode)
        rejects = [h.reject for h in fr.hunks if h.status == "failed"]
        if rejects:
            atomic_write(dest.with_name(dest.name + ".rej"), "".join(rejects).encode(*ENC))
    report.written = True
    return report


def tree_file(tree: Path, rel: str) -> Path:
    """A file in a tree, refusing paths that escape it (a patch must not write outside /usr/src)."""
    root = tree.resolve()
    path = (root / rel).resolve()
    if os.path.commonpath([root, path]) != str(root):
        raise PatchError(f"{rel}: path leaves the tree {tree}; refuse to touch it (check the strip level)")
    return path
