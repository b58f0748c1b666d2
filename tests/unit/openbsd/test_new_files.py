"""New and removed files in every form patch(1) accepts, made here from our own test trees.

Forms: ``--- /dev/null``; ``@@ -0,0`` with ``--- a/X`` (what mape79 publishes); cvs ``diff -N``;
git ``new file mode`` with a hunk and without one (an empty file); removals by ``+++ /dev/null``
and git ``deleted file mode``.  Each is parsed, created on apply, and reported when the file is
already there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mapelab.openbsd.apply import apply_patch
from mapelab.openbsd.unidiff import parse

from .helpers import diff_of

NEW = "regress/sbin/pfctl/pf116.in"
BODY = "match out on gif0 nat-to (gif0) map-e-portset 6/6/63\npass out\n"


def _forms(tree: Path, twin: Path) -> dict[str, str]:
    """The same new file as each patch form, built from a cvs-shaped diff of our own trees."""
    (twin / NEW).write_text(BODY)
    cvs = diff_of(tree, twin, [NEW])
    hunk = cvs[cvs.index("@@ -0,0"):]
    return {
        "cvs diff -N": cvs,
        "--- /dev/null": f"--- /dev/null\n+++ b/{NEW}\n{hunk}",
        "@@ -0,0 (no /dev/null)": f"--- a/{NEW}\n+++ b/{NEW}\n{hunk}",
        "git new file mode": f"diff --git a/{NEW} b/{NEW}\nnew file mode 100644\nindex 0000000..1111111\n"
                             f"--- /dev/null\n+++ b/{NEW}\n{hunk}",
    }


STRIP = {"cvs diff -N": 0, "--- /dev/null": 1, "@@ -0,0 (no /dev/null)": 1, "git new file mode": 1}


@pytest.mark.parametrize("form", list(STRIP))
def test_every_new_file_form_is_recognised_and_created(tree: Path, twin: Path, form: str) -> None:
    text = _forms(tree, twin)[form]
    [fp] = parse(text)
    assert fp.is_new and fp.new_file_form == form and fp.target(STRIP[form]) == NEW
    rep = apply_patch(tree, text, strip=STRIP[form])
    assert rep.ok and rep.written and rep.files[0].created
    assert (tree / NEW).read_text() == BODY
    assert f"{NEW}: new file ({form})" in rep.text()


@pytest.mark.parametrize("form", list(STRIP))
def test_a_new_file_that_exists_is_reported(tree: Path, twin: Path, form: str) -> None:
    text = _forms(tree, twin)[form]
    (tree / NEW).write_text("pass in\n")  # upstream took the name first (pf115 in newer trees)
    [h] = apply_patch(tree, text, strip=STRIP[form], dry_run=True).hunks
    assert h.status == "failed"
    assert f"patch creates {NEW} ({form}) but it already exists in the tree with other text" in h.reason
    assert (tree / NEW).read_text() == "pass in\n"


def test_a_new_file_already_there_with_the_same_text_is_called_applied(tree: Path, twin: Path) -> None:
    text = _forms(tree, twin)["@@ -0,0 (no /dev/null)"]
    (tree / NEW).write_text(BODY)
    [h] = apply_patch(tree, text, strip=1, dry_run=True).hunks
    assert h.status == "failed" and "already applied" in h.reason


def test_empty_existing_file_is_filled_like_patch1(tree: Path, twin: Path) -> None:
    """pch.c only asks for ``@@ -0,0``: an empty file of that name takes the text."""
    text = _forms(tree, twin)["@@ -0,0 (no /dev/null)"]
    (tree / NEW).write_text("")
    rep = apply_patch(tree, text, strip=1)
    assert rep.ok and (tree / NEW).read_text() == BODY


def test_git_empty_new_file_has_no_hunk_and_is_reported(tree: Path) -> None:
    """git writes no hunk for an empty new file; OpenBSD's patch(1) skips such a header."""
    text = (f"diff --git a/{NEW} b/{NEW}\nnew file mode 100644\nindex 0000000..e69de29\n"
            "diff --git a/sys/net/pfvar.h b/sys/net/pfvar.h\n--- a/sys/net/pfvar.h\n+++ b/sys/net/pfvar.h\n"
            "@@ -1 +1 @@\n-/*\t$OpenBSD: pfvar.h,v 1.540 2025/01/05 12:36:48 dev Exp $ */\n+/* x */\n")
    empty, pfvar = parse(text)
    assert empty.is_new and empty.hunks == [] and empty.new_file_form == "git new file mode"
    assert not pfvar.is_new and [h for h in pfvar.header if "new file" in h] == []
    rep = apply_patch(tree, text, strip=1, dry_run=True)
    assert [f.path for f in rep.files] == [NEW, "sys/net/pfvar.h"]
    assert rep.files[0].hunks[0].status == "failed" and "skips such headers" in rep.files[0].hunks[0].reason
    assert rep.files[1].ok


@pytest.mark.parametrize("how", ["+++ /dev/null", "deleted file mode"])
def test_removed_files(tree: Path, twin: Path, how: str) -> None:
    gone = "include/Makefile"
    (twin / gone).unlink()
    cvs = diff_of(tree, twin, [gone])
    hunk = cvs[cvs.index("@@ -1"):]
    text = (f"--- a/{gone}\n+++ /dev/null\n{hunk}" if how == "+++ /dev/null" else
            f"diff --git a/{gone} b/{gone}\ndeleted file mode 100644\n--- a/{gone}\n+++ b/{gone}\n{hunk}")
    [fp] = parse(text)
    assert fp.is_delete and fp.target(1) == gone
    rep = apply_patch(tree, text, strip=1)
    assert rep.ok and rep.files[0].deleted and not (tree / gone).exists()


def test_gnu_patch_creates_from_zero_hunk_too(tree: Path, twin: Path) -> None:
    """Cross-check: GNU patch also creates a file from ``--- a/X`` + ``@@ -0,0`` (mape79's form)."""
    gnu = shutil.which("patch")
    if not gnu:
        pytest.skip("GNU patch not installed: nothing to compare with")
    text = _forms(tree, twin)["@@ -0,0 (no /dev/null)"]
    proc = subprocess.run([gnu, "-p1", "-t", "-N"], input=text, text=True, cwd=tree, capture_output=True)
    assert proc.returncode == 0 and (tree / NEW).read_text() == BODY
