"""``mandoc -Tlint`` on manual pages, as a reviewer runs it before reading the text.

Run at ``-Wwarning`` so that STYLE messages about cross-references to pages this host does
not have (every OpenBSD page, on a Linux host) do not drown real problems such as "new
sentence, new line".  A reviewer wants -Tlint clean, so every message left is an error.
Pages are linted from a scratch directory holding them at their /usr/src-relative path, so
messages name ``share/man/man5/pf.conf.5``, not a temp file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .findings import Finding

_LINE = re.compile(r"^mandoc: (?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<level>[A-Z]+): (?P<msg>.*)$")
MAN_PAGE = re.compile(r"\.[1-9]$")


def available() -> bool:
    return shutil.which("mandoc") is not None


def lint_texts(pages: dict[str, str]) -> list[Finding]:
    """Lint man pages given as {relative path: content}; an empty list means clean."""
    if not pages:
        return []
    if not available():
        return [Finding("mandoc", p, None, "mandoc is not installed; install it (Debian: apt-get install mandoc) "
                        "to lint manual pages", "warning") for p in sorted(pages)]
    with tempfile.TemporaryDirectory(prefix="mapelab-mandoc.") as td:
        root = Path(td)
        for rel, text in pages.items():
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(text.encode("utf-8", "surrogateescape"))
        proc = subprocess.run(["mandoc", "-Tlint", "-Wwarning", "-Ios=OpenBSD", *sorted(pages)],
                              cwd=root, capture_output=True, text=True)
    out: list[Finding] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Finding("mandoc", m.group("path"), int(m.group("line")),
                               f"{m.group('level')}: {m.group('msg')}"))
        elif line.strip():
            out.append(Finding("mandoc", "", None, line.strip()))
    return out
