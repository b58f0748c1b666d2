"""mandoc -Tlint: a seeded man page error is caught; the clean page passes."""

from __future__ import annotations

import pytest

from mapelab.openbsd import mandoc

from .helpers import MAN_PAGE

pytestmark = pytest.mark.skipif(not mandoc.available(), reason="mandoc is not installed (apt-get install mandoc)")


def test_clean_page_passes() -> None:
    assert mandoc.lint_texts({"share/man/man5/pf.conf.5": MAN_PAGE}) == []


def test_new_sentence_mid_line_is_caught() -> None:
    bad = MAN_PAGE.replace("It is read at boot.\n", "It is read at boot. It is also read by pfctl.\n")
    [f] = mandoc.lint_texts({"share/man/man5/pf.conf.5": bad})
    assert (f.check, f.path, f.severity) == ("mandoc", "share/man/man5/pf.conf.5", "error")
    assert "new sentence, new line" in f.message and f.line == 12


def test_broken_macro_is_caught() -> None:
    bad = MAN_PAGE.replace(".Sh DESCRIPTION\n", ".Sh DESCRIPTION\n.Bl -tag\n")
    found = mandoc.lint_texts({"share/man/man5/pf.conf.5": bad})
    assert found and all(f.severity == "error" for f in found)
