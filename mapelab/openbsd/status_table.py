"""The "state of each published patch against each release" table, from ``patch.check --json``.

docs/patches.md carries this table; it is regenerated, never edited by hand::

    ./inv patch.check --series 7.9 --src /path/to/7.9/usr/src --json > 7.9.json
    ./inv patch.check --series 7.8 --src /path/to/7.8/usr/src --json > 7.8.json
    .venv/bin/python -m mapelab.openbsd.status_table 7.8=7.8.json 7.9=7.9.json

A row is a patch, a column a release (or tree); a cell says ``clean``, ``offsets`` (with the
largest), ``fuzz`` or which hunks fail and why, in the words the applier gave.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def cell(report: dict[str, Any]) -> str:
    """One patch against one tree, in a table cell."""
    hunks = report.get("hunks", [])
    if not hunks:
        return "no hunks"
    failed = [h for h in hunks if h["status"] == "failed"]
    if failed:
        bits = [f"{h['file']} hunk {h['number']}: {h['reason']}" for h in failed]
        return f"**{len(failed)} of {len(hunks)} hunks fail**: " + "; ".join(bits)
    fuzzed = [h for h in hunks if h["status"] == "fuzz"]
    if fuzzed:
        return f"fuzz in {len(fuzzed)} of {len(hunks)} hunks (" + ", ".join(
            f"{h['file']} hunk {h['number']} fuzz {h['fuzz']}" for h in fuzzed) + ")"
    moved = [h for h in hunks if h["status"] == "offset"]
    if moved:
        most = max(moved, key=lambda h: abs(h["offset"]))
        return f"offsets in {len(moved)} of {len(hunks)} hunks (largest {most['offset']:+d}, {most['file']})"
    return f"clean ({len(hunks)} hunks)"


def table(columns: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: ``columns`` maps a release label to the parsed ``patch.check --json`` output."""
    patches: list[str] = []
    for reports in columns.values():
        for r in reports:
            if r["patch"] not in patches:
                patches.append(r["patch"])
    lines = ["| patch | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name in patches:
        cells = []
        for reports in columns.values():
            found = [r for r in reports if r["patch"] == name]
            cells.append(cell(found[0]).replace("|", "\\|") if found else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``LABEL=FILE.json …`` → the table on stdout; exit 2 with one line on bad input."""
    if not argv:
        print("usage: python -m mapelab.openbsd.status_table RELEASE=check.json [RELEASE=check.json …]",
              file=sys.stderr)
        return 2
    columns: dict[str, list[dict[str, Any]]] = {}
    for arg in argv:
        label, sep, path = arg.partition("=")
        if not sep or not label or not path:
            print(f"status_table: {arg!r}: give LABEL=FILE, e.g. 7.9=check-7.9.json", file=sys.stderr)
            return 2
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            print(f"status_table: {path}: not readable patch.check --json output ({e})", file=sys.stderr)
            return 2
        if not isinstance(data, list):
            print(f"status_table: {path}: expected the list patch.check --json prints", file=sys.stderr)
            return 2
        columns[label] = data
    print(table(columns), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
