"""A unified-diff parser: patch text → files → hunks, with the cvs header lines kept.

mapelab parses diffs itself (rather than reading GNU patch's messages) so that the per-hunk
report, the refresh and the reviewer checks all work from one structure, on any host.  It
accepts what tech@ mails and the public patches contain: ``cvs diff -uNp`` output (``Index:``,
``RCS file:``, ``retrieving revision``, ``diff …`` lines), plain ``diff -u`` and git diffs,
with mail prose between files.  Lines keep their exact bytes (no whitespace folding, CRs kept);
text is handled as UTF-8 with surrogate escapes so any byte round-trips.

A file is *new* in every form OpenBSD's patch(1) (usr.bin/patch/pch.c 1.66) or GNU patch
creates one from: ``--- /dev/null``; a first hunk ``@@ -0,0 +1,N @@`` whatever the old name
(pch.c sets ``ok_to_create_file`` from those five characters alone, so ``--- a/X`` / ``+++ b/X``
creates X as well); cvs's ``diff -N`` shape (which is also ``@@ -0,0``); and git's
``new file mode`` (with or without a hunk: git writes no hunk for an empty new file).
Deleted files are ``+++ /dev/null`` or git's ``deleted file mode``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import PatchError

DEV_NULL = "/dev/null"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_NO_EOL = "\\ No newline at end of file"


@dataclass
class Hunk:
    """One ``@@`` block: where it claims to apply and its lines as (tag, text) pairs.

    ``tag`` is ``' '`` (context), ``'-'`` or ``'+'``; ``text`` has no line terminator.
    ``old_no_eol`` / ``new_no_eol`` record a ``\\ No newline at end of file`` marker.
    """

    old_start: int
    old_len: int
    new_start: int
    new_len: int
    section: str
    lines: list[tuple[str, str]]
    patch_line: int  # 1-based line of the @@ header in the patch text
    old_no_eol: bool = False
    new_no_eol: bool = False

    @property
    def old_lines(self) -> list[str]:
        return [t for tag, t in self.lines if tag in " -"]

    @property
    def new_lines(self) -> list[str]:
        return [t for tag, t in self.lines if tag in " +"]

    def render(self) -> str:
        """The hunk as unified-diff text (what a reject file holds)."""
        out = [f"@@ -{_range(self.old_start, self.old_len)} +{_range(self.new_start, self.new_len)} @@{self.section}"]
        for i, (tag, text) in enumerate(self.lines):
            out.append(tag + text)
            last_old = tag in " -" and not any(t in " -" for t, _ in self.lines[i + 1 :])
            last_new = tag in " +" and not any(t in " +" for t, _ in self.lines[i + 1 :])
            if (last_old and self.old_no_eol and tag != "+") or (last_new and self.new_no_eol and tag != "-"):
                out.append(_NO_EOL)
        return "\n".join(out) + "\n"


def _range(start: int, length: int) -> str:
    return str(start) if length == 1 else f"{start},{length}"


@dataclass
class FilePatch:
    """The changes to one file, with its header lines as written."""

    old_path: str
    new_path: str
    hunks: list[Hunk] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # Index:/RCS file:/diff lines before ---
    index: str | None = None
    revision: str | None = None

    @property
    def new_file_form(self) -> str | None:
        """How the patch says it creates the file, or None when it does not.

        The name says which form was seen, so a report can tell the user why mapelab treats
        the file as new (``@@ -0,0`` without /dev/null surprises people).
        """
        if any(h.startswith("new file mode ") for h in self.header):
            return "git new file mode"
        if any(h.startswith("diff -N") for h in self.header) and self._first_hunk_is_empty():
            return "cvs diff -N"
        if self.old_path == DEV_NULL:
            return "--- /dev/null"
        if self._first_hunk_is_empty():
            return "@@ -0,0 (no /dev/null)"
        return None

    def _first_hunk_is_empty(self) -> bool:
        return bool(self.hunks) and self.hunks[0].old_start == 0 and self.hunks[0].old_len == 0

    @property
    def is_new(self) -> bool:
        """The patch creates the file (any form in :attr:`new_file_form`)."""
        return self.new_file_form is not None

    @property
    def is_delete(self) -> bool:
        """The patch removes the file (``+++ /dev/null`` or git's ``deleted file mode``)."""
        return self.new_path == DEV_NULL or any(h.startswith("deleted file mode ") for h in self.header)

    def target(self, strip: int) -> str:
        """The path to patch, relative to the tree root, after removing ``strip`` components."""
        path = self.old_path if self.new_path == DEV_NULL else self.new_path
        return strip_path(path, strip)

    def added_lines(self) -> list[tuple[int, str]]:
        """(line number in the new file, text) of every added line."""
        out: list[tuple[int, str]] = []
        for h in self.hunks:
            n = h.new_start
            for tag, text in h.lines:
                if tag == "+":
                    out.append((n, text))
                if tag in " +":
                    n += 1
        return out


def strip_path(path: str, strip: int) -> str:
    """Remove up to ``strip`` leading components, as OpenBSD's ``patch -pN`` does.

    Like fetchname() in usr.bin/patch/util.c (1.46), a path with fewer components than
    ``strip`` keeps its last one rather than being refused: ``-p1`` turns ``Makefile`` into
    ``Makefile`` and ``-p3`` turns ``a/b`` into ``b``.  A wrong level therefore shows up as
    missing files, which the strip-level check (:mod:`.striplevel`) names.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise PatchError(f"{path!r}: not a file path; is the ---/+++ header complete?")
    return "/".join(parts[min(strip, len(parts) - 1):])


def _path_of(rest: str) -> str:
    """``sys/net/pf.c\\t5 Jan 2025 …\\t1.76`` → ``sys/net/pf.c``."""
    path = rest.split("\t", 1)[0].rstrip("\r")
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1]
    return path.rstrip()


def parse(text: str, where: str = "patch") -> list[FilePatch]:
    """Parse patch text into file patches; raise :class:`PatchError` on a malformed hunk."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[FilePatch] = []
    header: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            _flush_git_header(header, files)
            header = [line]
            i += 1
            continue
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            fp = FilePatch(_path_of(line[4:]), _path_of(lines[i + 1][4:]), header=header)
            for h in header:
                if h.startswith("Index: "):
                    fp.index = h[7:].strip()
                elif h.startswith("retrieving revision "):
                    fp.revision = h.split()[-1]
            if fp.revision is None:
                m = re.search(r"\t(\d+(?:\.\d+)+)\s*$", line)
                fp.revision = m.group(1) if m else None
            header = []
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                hunk, i = _parse_hunk(lines, i, where)
                fp.hunks.append(hunk)
            if not fp.hunks:
                raise PatchError(f"{where} line {i}: file {fp.new_path} has a header but no @@ hunk; "
                                 "the patch is truncated")
            files.append(fp)
            continue
        if line.startswith("Index: ") or (line.startswith("diff ") and not header):
            _flush_git_header(header, files)
            header = [line]
        elif header:
            header.append(line)
        i += 1
    _flush_git_header(header, files)
    return files


def _flush_git_header(header: list[str], files: list[FilePatch]) -> None:
    """A git header that had no ---/+++ lines: an empty file created or removed, or a mode change.

    Only creation and removal matter to a tree; they become a :class:`FilePatch` without hunks
    (the applier reports what OpenBSD's patch(1) does with them).
    """
    if not header or not header[0].startswith("diff --git "):
        return
    if not any(h.startswith(("new file mode ", "deleted file mode ")) for h in header):
        return
    m = re.match(r"^diff --git (\S+) (\S+)\s*$", header[0])
    if not m:
        return
    old, new = m.group(1), m.group(2)
    if any(h.startswith("new file mode ") for h in header):
        files.append(FilePatch(DEV_NULL, new, header=list(header)))
    else:
        files.append(FilePatch(old, DEV_NULL, header=list(header)))


def _parse_hunk(lines: list[str], i: int, where: str) -> tuple[Hunk, int]:
    m = _HUNK.match(lines[i].rstrip("\r"))
    if not m:
        raise PatchError(f"{where} line {i + 1}: malformed hunk header {lines[i]!r}")
    old_start, new_start = int(m.group(1)), int(m.group(3))
    old_len = int(m.group(2)) if m.group(2) is not None else 1
    new_len = int(m.group(4)) if m.group(4) is not None else 1
    hunk = Hunk(old_start, old_len, new_start, new_len, m.group(5), [], i + 1)
    old_left, new_left = old_len, new_len
    i += 1
    while old_left > 0 or new_left > 0:
        if i >= len(lines):
            raise PatchError(f"{where} line {hunk.patch_line}: hunk ends early (expected {old_left} more old "
                             f"and {new_left} more new lines); the patch is truncated")
        line = lines[i]
        tag, body = (line[:1], line[1:]) if line else (" ", "")  # an empty line is empty context
        if tag == "\\":
            _mark_no_eol(hunk)
            i += 1
            continue
        if tag not in " -+":
            raise PatchError(f"{where} line {i + 1}: unexpected {line[:30]!r} inside a hunk; the counts in "
                             f"the @@ header at line {hunk.patch_line} do not match its lines")
        if tag in " -":
            old_left -= 1
        if tag in " +":
            new_left -= 1
        if old_left < 0 or new_left < 0:
            raise PatchError(f"{where} line {i + 1}: hunk at line {hunk.patch_line} has more lines than "
                             "its header says")
        hunk.lines.append((tag, body))
        i += 1
    if i < len(lines) and lines[i].startswith("\\"):
        _mark_no_eol(hunk)
        i += 1
    return hunk, i


def _mark_no_eol(hunk: Hunk) -> None:
    if not hunk.lines:
        return
    tag = hunk.lines[-1][0]
    if tag in " -":
        hunk.old_no_eol = True
    if tag in " +":
        hunk.new_no_eol = True
