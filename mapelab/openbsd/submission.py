"""tech@ submissions: one plain-text mail per topic, and the checks a reviewer runs first.

A topic (``[topics.NAME]`` in the series) is one thread: pf kernel + pfctl + man + regress
together, dhcp6leased separately.  The mail is what tech@ expects: a short rationale wrapped
at 72 columns, how it was tested, "ok?", and the diff inline.  When a target tree is given the
diff is regenerated against it in ``cvs diff -uNp`` shape (so it applies with ``patch -p0``
from /usr/src and carries revision lines); otherwise the patch text goes in as it is.

Checks, each a :class:`~.findings.Finding`: the topic applies to the target tree (fuzz is a
warning: refresh it), style(9) on added C lines, whitespace-only hunks, ``mandoc -Tlint`` on
touched manual pages, and regress tests present when a grammar (pfctl's parse.y) changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..files import cache_dir
from ..runs import run_kind, runs_root
from . import mandoc, refresh, style
from .apply import ENC, apply_patch
from .components import touched_files
from .errors import SubmissionError
from .findings import Finding
from .series import Series
from .unidiff import parse

TO = "tech@openbsd.org"
GRAMMARS = {"sbin/pfctl/parse.y": "regress/sbin/pfctl/"}


@dataclass
class Submission:
    topic: str
    subject: str
    mail: str
    diff: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def checks_text(self) -> str:
        if not self.findings:
            return f"{self.topic}: all checks passed"
        lines = [f"{self.topic}: {sum(f.severity == 'error' for f in self.findings)} error(s), "
                 f"{sum(f.severity == 'warning' for f in self.findings)} warning(s)"]
        return "\n".join(lines + ["  " + f.text() for f in self.findings])


def run_roots() -> list[Path]:
    """Where e2e runs keep their directories: ``$MAPELAB_RUNS`` (default ``runs/`` in the repository,
    see :mod:`mapelab.runs`), then the cache's ``runs/`` and ``e2e/``."""
    return [runs_root(), cache_dir() / "runs", cache_dir() / "e2e"]


NOT_TESTED = "Not yet tested on a booted kernel: no passing mapelab run of an OpenBSD built from these diffs."


def patch_hashes(series: Series, texts: dict[str, str]) -> dict[str, str]:
    """name → sha256 of each patch text of ``series``: what a run must have been built from to count."""
    return {p.name: hashlib.sha256(texts[p.name].encode(*ENC)).hexdigest() for p in series.patches}


def _run_records(roots: list[Path] | None) -> list[tuple[float, Path, dict]]:
    out = []
    for base in roots if roots is not None else run_roots():
        for p in base.glob("*/summary.json"):
            if p.parent.is_symlink() or run_kind(p.parent) != "e2e":  # runs/latest-e2e: the same run again
                continue
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict):
                out.append((p.stat().st_mtime, p.parent, rec))
    return sorted(out, key=lambda x: x[0], reverse=True)


def evidence_for(series: Series, texts: dict[str, str], topic: str, roots: list[Path] | None = None
                 ) -> dict | None:
    """The newest e2e run a tech@ mail for ``topic`` may cite as "Tested on", or None.

    Only a run that (1) passed, (2) ran against the ``openbsd`` CE — a booted OpenBSD, never the
    reference Linux CE —, (3) whose every CE was built from exactly these patches (each sha256 of
    the series equal to the build's), and (4) whose CE profile exercises ``topic`` (a static-profile
    run proves the pf patch, not dhcp6leased's options).  Anything unreadable is skipped.
    """
    want = patch_hashes(series, texts)
    for _mtime, run_dir, rec in _run_records(roots):
        if rec.get("verdict") != "passed" or rec.get("ce_backend") != "openbsd" or not rec.get("ces"):
            continue
        ces = [c.get("ce") or {} for c in rec["ces"].values()]
        built = [{p.get("name"): p.get("sha256") for p in c.get("patches", [])} for c in ces]
        if not all(b == want for b in built):
            continue
        if not all(topic in (c.get("exercises_topics") or []) for c in ces):
            continue
        return {**rec, "run_dir": str(run_dir)}
    return None


def tested_on(record: dict | None) -> str | None:
    """The mail's "Tested on" sentence from a run :func:`evidence_for` chose (None: no such run)."""
    if not record:
        return None
    ce = next(iter(record["ces"].values()))
    desc, system = ce.get("ce") or {}, ce.get("system") or {}
    kern = str(system.get("kern.version") or "").strip().splitlines()
    counts = record.get("counts") or {}
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    gate = (record.get("gate") or {}).get("verdict")
    return (f"Tested on OpenBSD {desc.get('release')} {desc.get('arch')}, booted in QEMU with these diffs "
            f"applied to its kernel and userland ({kern[0] if kern else 'kernel version not recorded'}): "
            f"mapelab's MAP-E e2e suite against a simulated ISP, CE profile {desc.get('profile')}, scenarios "
            f"{', '.join(record.get('scenarios') or [])}: {tally}"
            + (f"; deployment gate {gate}" if gate else "") + ".")


def wrap(text: str, width: int = 72) -> str:
    """Wrap each paragraph to ``width`` (tech@ prose is 72 columns; no format=flowed)."""
    paras = [p.strip() for p in text.strip().split("\n\n")]
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width) for p in paras if p)


def _regenerate(tree: Path, overlay: dict[str, str | None], files: list[str]) -> str:
    """cvs-shaped diff of ``files`` between ``tree`` and the overlay, via two scratch trees."""
    with tempfile.TemporaryDirectory(prefix="mapelab-sub.") as td:
        old, new = Path(td) / "old", Path(td) / "new"
        for rel in files:
            src = tree / rel
            for root in (old, new):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                entries = src.parent / "CVS" / "Entries"
                if entries.is_file():
                    (root / rel).parent.joinpath("CVS").mkdir(exist_ok=True)
                    shutil.copy2(entries, (root / rel).parent / "CVS" / "Entries")
            if src.is_file():
                shutil.copy2(src, old / rel)
            text = overlay.get(rel)
            if text is not None:
                (new / rel).write_bytes(text.encode(*ENC))
        return refresh.cvs_diff(old, new, files)


def prepare(
    series: Series,
    texts: dict[str, str],
    topic: str,
    *,
    tree: Path | None = None,
    runs: list[Path] | None = None,
) -> Submission:
    """Build the mail and run the checks for one topic of ``series``.

    ``texts`` maps patch name → patch text (already fetched and verified by the caller); ``runs``
    are the run roots searched for evidence (default: :func:`run_roots`).
    """
    if topic not in series.topics:
        raise SubmissionError(f"topic {topic!r} is not in {series.path}; topics: {', '.join(series.topics)}")
    refs = series.for_topic(topic)
    missing = [r.name for r in refs if r.name not in texts]
    if missing:
        raise SubmissionError(f"topic {topic!r}: no text for patch(es) {', '.join(missing)}; fetch them first")
    items = [(r.name, texts[r.name], r.strip) for r in refs]
    findings: list[Finding] = []
    files = touched_files(items)

    for name, text, strip in items:
        for fp in parse(text, name):
            rel = fp.target(strip)
            findings += style.check_patch(fp, rel)
            findings += style.check_whitespace_hunks(fp, rel)

    for grammar, regress in GRAMMARS.items():
        if grammar in files and not any(f.startswith(regress) for f in files):
            findings.append(Finding("regress", grammar, None,
                                    f"the grammar changes but no test under {regress} is added or changed; "
                                    "add pfNNN.in/.ok (and pfailNN for new errors)"))

    overlay: dict[str, str | None] = {}
    diff = "".join(t if t.endswith("\n") else t + "\n" for _, t, _ in items)
    if tree is not None:
        all_ok = True
        for name, text, strip in items:
            rep = apply_patch(tree, text, strip=strip, dry_run=True, name=name, overlay=overlay)
            for h in rep.hunks:
                if h.status == "failed":
                    all_ok = False
                    findings.append(Finding("applies", h.file, None, f"{name}: hunk {h.number} does not apply "
                                            f"({h.reason}); refresh the patch against this tree"))
                elif h.status == "fuzz":
                    findings.append(Finding("applies", h.file, h.line, f"{name}: hunk {h.number} needs fuzz "
                                            f"{h.fuzz}; refresh the patch so it applies cleanly", "warning"))
        if all_ok:
            diff = _regenerate(tree, overlay, files)
        pages = {rel: overlay[rel] for rel in files if mandoc.MAN_PAGE.search(rel) and overlay.get(rel) is not None}
        findings += mandoc.lint_texts(pages)  # type: ignore[arg-type]
    else:
        pages_new: dict[str, str] = {}
        for name, text, strip in items:
            for fp in parse(text, name):
                rel = fp.target(strip)
                if mandoc.MAN_PAGE.search(rel):
                    if fp.is_new:
                        pages_new[rel] = "\n".join(t for t in fp.hunks[0].new_lines) + "\n"
                    else:
                        findings.append(Finding("mandoc", rel, None, "not linted: give --tree (or --release) so "
                                                "the patched page can be built", "warning"))
        findings += mandoc.lint_texts(pages_new)

    t = series.topics[topic]
    tested_line = tested_on(evidence_for(series, texts, topic, runs)) or NOT_TESTED
    mail = (
        f"To: {TO}\nSubject: {t.subject}\n\n{wrap(t.rationale)}\n\n{wrap(tested_line)}\n\nok?\n\n{diff}"
    )
    return Submission(topic, t.subject, mail, diff, findings)
