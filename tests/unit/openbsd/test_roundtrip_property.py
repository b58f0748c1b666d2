"""Property: for any edit, refresh's diff applied to the original gives the edited file exactly,
and patch(1) agrees with it when it is installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapelab.openbsd import refresh
from mapelab.openbsd.apply import apply_patch

LINE = st.sampled_from(["int", "{", "}", "\treturn (0);", "\tx++;", "", "\t/* c */", "foo(void)", "  ", "\ty = 1; "])
FILE = st.lists(LINE, max_size=40)


def _text(lines: list[str], eol: bool) -> str:
    return "\n".join(lines) + ("\n" if eol and lines else "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=FILE, new=FILE, old_eol=st.booleans(), new_eol=st.booleans())
def test_refresh_then_apply_round_trips(old: list[str], new: list[str], old_eol: bool, new_eol: bool) -> None:
    with tempfile.TemporaryDirectory() as td:
        a, b = Path(td) / "a", Path(td) / "b"
        for root, lines, eol in ((a, old, old_eol), (b, new, new_eol)):
            (root / "sys").mkdir(parents=True)
            (root / "sys/f.c").write_text(_text(lines, eol))
        diff = refresh.cvs_diff(a, b, ["sys/f.c"])
        target = Path(td) / "t"
        shutil.copytree(a, target)
        if diff:
            rep = apply_patch(target, diff)
            assert rep.ok and all(h.status == "clean" for h in rep.hunks)
        assert (target / "sys/f.c").read_text() == (b / "sys/f.c").read_text()
        gnu = shutil.which("patch")
        if gnu and diff:
            other = Path(td) / "g"
            shutil.copytree(a, other)
            subprocess.run([gnu, "-s", "-p0", "--no-backup-if-mismatch"], input=diff.encode(), cwd=other,
                           check=True, capture_output=True)
            assert (other / "sys/f.c").read_text() == (b / "sys/f.c").read_text()
