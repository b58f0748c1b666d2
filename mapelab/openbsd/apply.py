"""Apply a parsed patch to a tree and report every hunk: clean, offset N, fuzz N or failed.

mapelab predicts what OpenBSD's own patch(1) does, because that is the patch build-vm runs
inside the guest (``patch -t -N -E -pN``, :func:`openbsd_patch_command`).  The matcher follows
usr.bin/patch/patch.c 1.74 and pch.c 1.66 (OpenBSD, 2023; unchanged in 7.8 and 7.9):

- a hunk is looked for where its header says plus the offset OpenBSD's patch carried over
  from the previous hunk, then one line after, one line before, two after, … within the file;
- lines are compared exactly (never ignoring whitespace: a ``diff -b`` artifact must show up);
- if that fails everywhere, fuzz 1 then fuzz 2 are tried, each with the same search; fuzz F
  leaves out the first F and the last F lines of the hunk's old text, whatever they are, and
  the most fuzz a hunk gets is the smaller of 2 and the number of context lines before its
  first change (pch.c's ``p_context``).  GNU patch instead fuzzes only context lines, side by
  side, and pins a hunk with less trailing context to the end of the file;
- OpenBSD's patch remembers a hunk's offset relative to its starting guess (``last_offset =
  offset``), GNU's the total; mapelab searches from OpenBSD's guess and reports the total
  displacement (the number GNU prints), so the two tools can be compared line for line.

Where OpenBSD's patch(1) would do something silently harmful, mapelab reports a failure
instead and says so in the reason: a new file that already exists (OpenBSD's patch inserts the
new text at the top of the existing file), and git's hunk-less empty new files (which it
skips).

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
    new_file_form: str | None = None  # how the patch says it creates the file (unidiff.FilePatch)
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
                lines.append(f"  {f.path}: new file ({f.new_file_form})")
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


MAX_FUZZ = 2  # OpenBSD patch(1)'s default -F


def openbsd_patch_command(strip: int, patch_file: str) -> list[str]:
    """The patch(1) invocation mapelab's verdicts predict, for build-vm to run in the guest.

    -t: never prompt (no file → "No file to patch. Skipping"); -N: a hunk that is already
    applied is ignored, never reversed (without it, and without a tty, OpenBSD's patch
    assumes -R); -E: a file a patch empties is removed, as a deletion means.
    """
    return ["patch", "-t", "-N", "-E", f"-p{strip}", "-i", patch_file]


def openbsd_context(h: Hunk) -> int:
    """pch.c's ``p_context`` for a unified hunk: the cap on its fuzz.

    The context lines counted before the first change, or — when the hunk starts with a
    change — those between its first and second change; 100 when there is no such run.
    """
    context, best = 0, 100
    for tag, _ in h.lines:
        if tag == " ":
            context += 1
        elif context > 0:
            best = min(best, context)
            context = -1000
    return best


def _matches(lines: list[str], eol: bool, old: list[str], old_no_eol: bool, where: int, fuzz: int) -> bool:
    """patch.c's patch_match(): ``old`` minus ``fuzz`` lines at each end, at 0-based ``where``."""
    n = len(lines)
    for j in range(fuzz, len(old) - fuzz):
        i = where + j
        if i < 0 or i >= n or lines[i] != old[j]:
            return False
        if i == n - 1 and (not eol) != (old_no_eol and j == len(old) - 1):
            return False  # the last line's newline must agree too
    return True


def _locate(lines: list[str], eol: bool, h: Hunk, first_guess: int, frozen: int, fuzz: int) -> int | None:
    """patch.c's locate_hunk(): the 1-based line where the hunk's old text starts, or None."""
    old = h.old_lines
    if not old:
        return first_guess or 1
    n = len(lines)
    max_pos = n - first_guess - len(old) + 1
    max_neg = min(first_guess - frozen - 1 + openbsd_context(h), first_guess - 1)
    if first_guess <= n and _matches(lines, eol, old, h.old_no_eol, first_guess - 1, fuzz):
        return first_guess
    offset = 1
    while True:
        after, before = offset <= max_pos, offset <= max_neg
        if after and _matches(lines, eol, old, h.old_no_eol, first_guess + offset - 1, fuzz):
            return first_guess + offset
        if before and _matches(lines, eol, old, h.old_no_eol, first_guess - offset - 1, fuzz):
            return first_guess - offset
        if not after and not before:
            return None
        offset += 1


def explain_failure(lines: list[str], h: Hunk, expected: int) -> str:
    """Why a hunk found no place: where its old text comes closest, and the first line that differs.

    A reviewer refreshing a patch wants "context line 4 is now X", not "no match"; this is
    the position (nearest the expected one on ties) where most old lines agree in order.
    """
    old = h.old_lines
    if not old:
        return "no place where its old lines match"
    best: tuple[int, int] | None = None  # (agreeing lines, -distance), position
    best_pos = 0
    for pos in range(0, max(1, len(lines) - len(old) + 1)):
        agree = sum(1 for j, t in enumerate(old) if pos + j < len(lines) and lines[pos + j] == t)
        key = (agree, -abs(pos - (expected - 1)))
        if best is None or key > best:
            best, best_pos = key, pos
    assert best is not None
    if best[0] == 0:
        return "none of its old lines are in the file"
    for j, t in enumerate(old):
        got = lines[best_pos + j] if best_pos + j < len(lines) else None
        if got != t:
            kind = "removed" if h.lines[[k for k, (tag, _) in enumerate(h.lines) if tag in " -"][j]][0] == "-" \
                else "context"
            found = "end of file" if got is None else repr(got.strip())
            return (f"{kind} line {j + 1} of {len(old)} ({t.strip()!r}) does not match line "
                    f"{best_pos + j + 1} of the file ({found}); {best[0]} of {len(old)} old lines agree there")
    return "no place where its old lines match"


def apply_to_lines(
    lines: list[str], eol: bool, fp: FilePatch, path: str, max_fuzz: int = MAX_FUZZ
) -> tuple[list[str], bool, list[HunkResult]]:
    """Apply every hunk of ``fp`` to ``lines`` as OpenBSD's patch(1) does; new lines, EOL, per-hunk results.

    Hunks are located in the original lines (as patch.c does: its input file never changes
    while it writes the output), in order, never before what earlier hunks consumed.
    """
    out: list[str] = []
    out_eol = True   # whether the last line written so far ends with a newline
    results: list[HunkResult] = []
    frozen = 0       # original lines already consumed (copied or deleted)
    bsd_offset = 0   # OpenBSD's last_offset: relative to the previous guess, not the header
    for number, h in enumerate(fp.hunks, 1):
        first = h.old_start + (0 if h.old_len else 1)  # pch.c: an empty old side appends after old_start
        first_guess = first + bsd_offset
        top = min(max_fuzz, openbsd_context(h))
        where = fuzz = None
        for f in range(0, top + 1):
            where = _locate(lines, eol, h, first_guess, frozen, f)
            if where is not None:
                fuzz = f
                break
        old = h.old_lines
        first_change = next((k for k, (tag, _) in enumerate(h.lines) if tag != " "), len(h.lines))
        if where is not None and where - 1 + first_change < frozen:
            where = None  # patch.c: "misordered hunks! output would be garbled" (it aborts)
        if where is None or fuzz is None:
            results.append(HunkResult(path, number, "failed", reason=explain_failure(lines, h, first_guess),
                                      reject=h.render()))
            continue
        if where != first_guess:
            bsd_offset = where - first_guess
        offset = where - first
        line = where + len(out) - frozen
        if where - 1 > frozen:
            out.extend(lines[frozen : where - 1])
            out_eol = True
        pos = where - 1
        k_old = 0
        for tag, text in h.lines:
            if tag == " ":
                if pos >= frozen:
                    out.append(lines[pos])
                    out_eol = not (pos == len(lines) - 1 and not eol)
                pos += 1
                k_old += 1
            elif tag == "-":
                pos += 1
                k_old += 1
            else:
                out.append(text)
                out_eol = True
        if h.new_no_eol and h.lines and any(tag == "+" for tag, _ in h.lines):
            last_new = max(k for k, (tag, _) in enumerate(h.lines) if tag in " +")
            if h.lines[last_new][0] == "+":
                out_eol = False
        frozen = max(frozen, where - 1 + len(old))
        status = "fuzz" if fuzz else ("offset" if offset else "clean")
        results.append(HunkResult(path, number, status, offset=offset, fuzz=fuzz, line=line))
    if frozen < len(lines):
        out.extend(lines[frozen:])
        out_eol = eol
    return out, (out_eol if out else True), results


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
        fr = FileResult(rel, new_file_form=fp.new_file_form)
        if rel in overlay:
            current = overlay[rel]
        elif dest.is_file():
            current = _read(dest)
        else:
            current = None
        problem = _file_problem(fp, rel, current)
        if problem:
            for n, h in enumerate(fp.hunks or [None], 1):
                fr.hunks.append(HunkResult(rel, n, "failed", reason=problem, reject=h.render() if h else ""))
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


def _file_problem(fp: FilePatch, rel: str, current: str | None) -> str | None:
    """Why a file cannot be patched at all (every hunk then fails with this reason), or None."""
    if not fp.hunks:
        what = "creates an empty" if fp.is_new else "removes the"
        return (f"git header {what} file {rel} without a hunk; OpenBSD's patch(1) skips such headers, "
                f"so {'create' if fp.is_new else 'remove'} it by hand or give the patch a hunk")
    if current is None and not fp.is_new:
        return f"{rel} does not exist in the tree"
    if current is not None and fp.is_new and current != "":
        new_text = join_lines(fp.hunks[0].new_lines, not fp.hunks[0].new_no_eol)
        if len(fp.hunks) == 1 and current == new_text:
            return (f"patch creates {rel} ({fp.new_file_form}) but it already exists with the same text: "
                    "this patch is already applied")
        return (f"patch creates {rel} ({fp.new_file_form}) but it already exists in the tree with other text "
                "(OpenBSD's patch(1) would insert the new lines at the top of it); pick a free name or "
                "update the patch")
    return None


def tree_file(tree: Path, rel: str) -> Path:
    """A file in a tree, refusing paths that escape it (a patch must not write outside /usr/src)."""
    root = tree.resolve()
    path = (root / rel).resolve()
    if os.path.commonpath([root, path]) != str(root):
        raise PatchError(f"{rel}: path leaves the tree {tree}; refuse to touch it (check the strip level)")
    return path
