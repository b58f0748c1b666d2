"""`invoke fetch-src`, `invoke patch.*` and `invoke submission`: OpenBSD sources, patch series, tech@ mails.

Thin: parse options, call :mod:`mapelab.openbsd`, print.  Any error of that layer becomes one
line naming the input and the fix, with exit code 2 (:mod:`._guard`); a patch that does not
apply (or checks that fail) exits 1 after the full report.
"""

from __future__ import annotations

import json as jsonlib
import shutil
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from mapelab.files import atomic_write, cache_sub
from mapelab.openbsd import components, refresh, sources, striplevel
from mapelab.openbsd import series as series_mod
from mapelab.openbsd import submission as sub_mod
from mapelab.openbsd.apply import apply_patch
from mapelab.openbsd.unidiff import parse

from ._guard import (
    Choice,
    ExistingDir,
    ExistingFile,
    GitRef,
    GitSource,
    Int,
    Name,
    NewPath,
    RelPaths,
    Url,
    guarded,
)

SOURCE_HELP = {
    "release": "OpenBSD release (7.6, 7.9 …, or current): picks patches/<release>.toml and, without "
    "--src/--git, the signify-verified release sources",
    "src": "an existing /usr/src-shaped directory (default: $MAPELAB_OPENBSD_SRC)",
    "git": "a git mirror of OpenBSD src (URL or local repository) to take the tree from",
    "ref": "branch, tag or commit of --git",
    "mirror": "OpenBSD mirror base URL for release tarballs (default: $MAPELAB_OPENBSD_MIRROR or the OpenBSD CDN)",
}
SERIES_HELP = {
    "series": "series name in patches/ (e.g. 7.6) or a path to a series TOML file (default: --release)",
    "allow_unverified": "use patches that have no sha256 pin (series entries marked unverified = true)",
}


RELEASE = Name(r"\d\.\d|current", "an OpenBSD release such as 7.6, 7.9 or current")
ARCHS = ("alpha", "amd64", "arm64", "armv7", "hppa", "i386", "landisk", "loongson", "luna88k", "macppc", "octeon",
         "powerpc64", "riscv64", "sparc64")  # OpenBSD's platforms: sys/arch/<arch>/compile/GENERIC.MP
SOURCE_OPTIONS = {"release": RELEASE, "src": ExistingDir(), "git": GitSource(), "ref": GitRef(), "mirror": Url()}
SERIES = Name(r"[A-Za-z0-9][A-Za-z0-9_.+-]*|.*\.toml", "a series name in patches/ (e.g. 7.6) or a .toml file")


def _series(task_name: str, series: str | None, release: str | None) -> series_mod.Series:
    name = series or release
    if not name:
        raise Exit(f"{task_name}: give --release 7.6 (uses patches/7.6.toml) or --series NAME_OR_FILE; "
                   f"available series: {', '.join(series_mod.available())}", code=2)
    return series_mod.load(name)


def _texts(task_name: str, s: series_mod.Series, allow_unverified: bool) -> dict[str, str]:
    unverified = [p.name for p in s.unverified]
    if unverified and not allow_unverified:
        raise Exit(f"{task_name}: series {s.path} has unverified patches ({', '.join(unverified)}); pin their "
                   "sha256 in the series file, or pass --allow-unverified to use them anyway", code=2)
    return {p.name: series_mod.patch_text(p, allow_unverified=allow_unverified) for p in s.patches}


def _tree(task_name: str, s: series_mod.Series | None, release: str | None, src: str | None, git: str | None,
          ref: str | None, mirror: str | None = None) -> Path:
    rel = release or (s.release if s else None)
    spec = sources.spec_from_options(rel, git, ref, src, mirror)
    return sources.obtain(spec)


@task(help=SOURCE_HELP)
@guarded(**SOURCE_OPTIONS)
def fetch_src(c, release=None, src=None, git=None, ref=None, mirror=None):
    """Fetch OpenBSD src+sys in /usr/src shape (signify-verified release, git mirror or local dir).

    Release tarballs are verified with mapelab's own signify check against pinned keys, then by
    the signed sha256 list; trees are cached under $MAPELAB_CACHE/src and reused.
    """
    tree = _tree("fetch-src", None, release, src, git, ref, mirror)
    print(tree)
    print(jsonlib.dumps(sources.describe(tree), sort_keys=True))


def _run_series(task_name, s, texts, tree, *, dry_run, partial=False, rejects=True, as_json=False) -> bool:
    overlay: dict[str, str | None] = {}
    reports = []
    warnings: dict[str, list[str]] = {}
    for p in s.patches:
        notes = warnings.setdefault(p.name, [])
        if s.release not in p.releases:
            notes.append(f"{p.name} is marked for {', '.join(p.releases)}, not {s.release}")
        if dry_run:
            strip_note = striplevel.warning(p.name, tree, parse(texts[p.name], p.name), p.strip)
            if strip_note:
                notes.append(strip_note)
        for w in notes:
            print(f"warning: {w}", file=sys.stderr if as_json else sys.stdout)
        rep = apply_patch(tree, texts[p.name], strip=p.strip, dry_run=dry_run, partial=partial,
                          name=p.name, overlay=overlay)
        reports.append(rep)
        if not dry_run and not rep.ok and not partial:
            break  # later patches would be applied to a tree missing this one
    if as_json:
        print(jsonlib.dumps([{"patch": r.patch, "ok": r.ok, "written": r.written, "warnings": warnings[r.patch],
                              "files": [{"path": f.path, "new_file_form": f.new_file_form, "created": f.created,
                                         "deleted": f.deleted} for f in r.files],
                              "hunks": [h.__dict__ for h in r.hunks]} for r in reports], indent=2))
    else:
        for r in reports:
            print(r.text(rejects=rejects))
    return all(r.ok for r in reports) and len(reports) == len(s.patches)


@task(help={**SOURCE_HELP, **SERIES_HELP,
            "tree": "check against this tree instead of fetching one (same as --src)",
            "rejects": "print each failed hunk in full (default on)",
            "json": "print the per-hunk report as JSON"})
@guarded(**SOURCE_OPTIONS, series=SERIES, tree=ExistingDir())
def check(c, release=None, series=None, tree=None, src=None, git=None, ref=None, mirror=None,
          allow_unverified=False, rejects=True, json=False):
    """Dry-run a series against a tree: every hunk reported clean / offset N / fuzz N / failed, nothing written."""
    s = _series("patch.check", series, release)
    root = _tree("patch.check", s, release, tree or src, git, ref, mirror)
    texts = _texts("patch.check", s, allow_unverified)
    if not _run_series("patch.check", s, texts, root, dry_run=True, rejects=rejects, as_json=json):
        raise Exit("patch.check: some hunks do not apply (see the rejects above); refresh the patch", code=1)


@task(help={**SOURCE_HELP, **SERIES_HELP,
            "tree": "apply in place to this tree (it is modified)",
            "out": "copy the source tree here first and apply to the copy (keeps the cached tree pristine)",
            "partial": "write the hunks that apply and FILE.rej for the others (default: all or nothing)",
            "json": "print the per-hunk report as JSON"})
@guarded(**SOURCE_OPTIONS, series=SERIES, tree=ExistingDir(), out=NewPath(dir_ok=True, must_not_exist=True))
def apply(c, release=None, series=None, tree=None, out=None, src=None, git=None, ref=None, mirror=None,
          allow_unverified=False, partial=False, json=False):
    """Apply a series to a tree, reporting every hunk; by default nothing is written unless all hunks apply."""
    s = _series("patch.apply", series, release)
    if not tree and not out:
        raise Exit("patch.apply: give --tree DIR (apply in place) or --out DIR (apply to a fresh copy); "
                   "the cached source tree is never modified", code=2)
    texts = _texts("patch.apply", s, allow_unverified)
    if tree:
        root = _tree("patch.apply", s, release, tree, None, None)
        if sources.describe(root)["kind"] != "local":
            raise Exit(f"patch.apply: {root} is mapelab's cached pristine tree; use --out DIR to apply to a copy",
                       code=2)
    else:
        pristine = _tree("patch.apply", s, release, src, git, ref, mirror)
        root = Path(out).expanduser().absolute()
        if root.exists():
            raise Exit(f"patch.apply: --out {root} already exists; remove it or choose another directory", code=2)
        shutil.copytree(pristine, root, symlinks=True)
    ok = _run_series("patch.apply", s, texts, root, dry_run=False, partial=partial, as_json=json)
    print(f"tree: {root}")
    if not ok:
        raise Exit("patch.apply: some hunks did not apply (see above); nothing was written for the failing patch"
                   if not partial else "patch.apply: some hunks did not apply; see the .rej files", code=1)


@task(help={**SOURCE_HELP, **SERIES_HELP,
            "tree": "the edited tree (required)",
            "pristine": "the unmodified tree to diff against (default: the source given by --release/--src/--git)",
            "patch": "which series patch to regenerate (its files are diffed); default: all files of the series",
            "also": "extra path(s) relative to /usr/src to include, comma-separated (e.g. new regress files)",
            "out": "write the patch here (default: print it)"})
@guarded(**SOURCE_OPTIONS, series=SERIES, tree=ExistingDir(), pristine=ExistingDir(), also=RelPaths(),
         patch=Name(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", "a patch name of the series (its [[patch]] name)"), out=NewPath())
def refresh_(c, tree=None, pristine=None, release=None, series=None, patch=None, also=None, src=None, git=None,
             ref=None, mirror=None, allow_unverified=False, out=None):
    """Regenerate a patch from an edited tree in `cvs diff -uNp` shape (Index:, RCS file:, revisions, -p0 paths)."""
    if not tree:
        raise Exit("patch.refresh: give --tree DIR, the edited tree to make the diff from", code=2)
    edited = Path(tree).expanduser().absolute()
    if not edited.is_dir():
        raise Exit(f"patch.refresh: --tree {edited} is not a directory", code=2)
    files: list[str] = list(also)
    s = None
    if series or release:
        s = _series("patch.refresh", series, release)
        refs = [p for p in s.patches if not patch or p.name == patch]
        if patch and not refs:
            raise Exit(f"patch.refresh: no patch {patch!r} in {s.path}; have {', '.join(p.name for p in s.patches)}",
                       code=2)
        texts = _texts("patch.refresh", s, allow_unverified)
        for p in refs:
            files += [fp.target(p.strip) for fp in parse(texts[p.name], p.name)]
    if not files:
        raise Exit("patch.refresh: no files to diff; give --series/--release (and --patch) or --also PATHS", code=2)
    base = Path(pristine).expanduser().absolute() if pristine else _tree("patch.refresh", s, release, src, git, ref,
                                                                          mirror)
    text = refresh.cvs_diff(base, edited, files)
    if out:
        atomic_write(Path(out), text.encode("utf-8", "surrogateescape"))
        print(f"wrote {out} ({text.count(chr(10))} lines, {len(set(files))} files)")
    else:
        print(text, end="")


@task(help={**SERIES_HELP, "release": "use patches/<release>.toml",
            "patch": "plan for a patch file instead of a series (paths relative to /usr/src, -p0)",
            "strip": "strip level for --patch (default 0)",
            "arch": "kernel architecture (default amd64)",
            "json": "print the plan as JSON (what build-vm reads)"})
@guarded(series=SERIES, release=RELEASE, patch=ExistingFile(), strip=Int(0, 16, default=0),
         arch=Choice(ARCHS, default="amd64"))
def plan(c, series=None, release=None, patch=None, strip=None, arch=None, allow_unverified=False, json=False):
    """Plan the smallest correct rebuild for the files a series touches (what build-vm runs).

    sys/ → kernel; sys/net/pfvar.h → make includes + every pf ioctl consumer; programs; regress;
    man pages are linted, not built.
    """
    if patch:
        p = Path(patch)
        touched = [fp.target(strip) for fp in parse(p.read_text(errors="surrogateescape"), str(p))]
        result = components.plan(touched, arch=arch)
    else:
        s = _series("patch.plan", series, release)
        result = components.plan_series(s, _texts("patch.plan", s, allow_unverified), arch=arch)
    print(jsonlib.dumps(result.as_dict(), indent=2) if json else result.text())


@task(help={**SOURCE_HELP, **SERIES_HELP,
            "topic": "only this topic (default: every topic of the series)",
            "tree": "target tree the diff must apply to (default: the source given by --release/--src/--git; "
            "--no-tree-check skips it)",
            "tree_check": "check against a target tree (default on); off: no apply check and no man page lint",
            "out": "directory for TOPIC.mail and TOPIC.checks.txt (default: $MAPELAB_CACHE/submissions/SERIES)",
            "json": "print the checks as JSON"})
@guarded(**SOURCE_OPTIONS, series=SERIES, tree=ExistingDir(), out=NewPath(dir_ok=True),
         topic=Name(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", "a topic name of the series ([topics.NAME])"))
def submission(c, release=None, series=None, topic=None, tree=None, src=None, git=None, ref=None, mirror=None,
               allow_unverified=False, tree_check=True, out=None, json=False):
    """Write one plain-text tech@ mail per topic, in the series' topic order, and run a reviewer's first checks.

    The mail: subject, rationale, "tested on" from the latest passing e2e run, ok?, the inline diff
    (cvs -uNp shape when a target tree is given).  Checks: applies, style(9), whitespace-only
    hunks, mandoc -Tlint, regress present when pfctl's grammar changes.
    """
    s = _series("submission", series, release)
    target = _tree("submission", s, release, tree or src, git, ref, mirror) if tree_check else None
    texts = _texts("submission", s, allow_unverified)
    topics = [topic] if topic else s.ordered_topics
    dest = Path(out).expanduser() if out else cache_sub("submissions", s.name)
    results = []
    for t in topics:
        sub = sub_mod.prepare(s, texts, t, tree=target)
        atomic_write(dest / f"{t}.mail", sub.mail.encode("utf-8", "surrogateescape"))
        atomic_write(dest / f"{t}.checks.txt", sub.checks_text() + "\n")
        results.append(sub)
    if json:
        print(jsonlib.dumps([{"order": n, "topic": r.topic, "ok": r.ok, "mail": str(dest / f"{r.topic}.mail"),
                              "findings": [f.as_dict() for f in r.findings]} for n, r in enumerate(results, 1)],
                            indent=2))
    else:
        for r in results:
            print(r.checks_text())
            print(f"  mail: {dest / (r.topic + '.mail')}")
    if not all(r.ok for r in results):
        raise Exit("submission: checks found errors (above); fix them before mailing tech@", code=1)


collection = Collection("patch", check, apply, plan)
collection.add_task(refresh_, name="refresh")
root_tasks = [fetch_src, submission]
