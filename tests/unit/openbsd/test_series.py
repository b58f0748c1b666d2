"""Series files: the shipped defaults are valid and pinned as promised; bad files say what to fix."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from mapelab.openbsd import series
from mapelab.openbsd.errors import FetchError, SeriesError

MAPE76_SHA = "5817fe2d1024de0ddfb3c06d5eead82c3573083c2dd54b65968ab204fa890b6e"
MAPE79_SHA = "b6ac038048b253e6c31de18170d1acea7040168f76ef442f0dc3d34ff5fecc12"
DHCP79_SHA = "c57e8f01cd41621604721e36ee94ce1ca6b9ff367809b3ab96f86c46eb3c0ba7"


def test_shipped_series() -> None:
    assert {"7.6", "7.8", "7.9", "current"} <= set(series.available())
    s76 = series.load("7.6")
    [p] = s76.patches
    assert p.sha256 == MAPE76_SHA and not p.unverified and p.strip == 0
    assert "66743b856c9340f25f6a064babc9dafbdf5af384" in (p.url or "") and p.url.endswith("mape76.patch")
    for name in ("7.9", "current"):
        s = series.load(name)
        assert s.unverified == [], name
        by = {p.name: p for p in s.patches}
        assert by["mape79"].sha256 == MAPE79_SHA and by["dhcp6leased-mape-79"].sha256 == DHCP79_SHA
        assert all(p.strip == 1 and re.search(r"/openbsd-mape-ce/[0-9a-f]{40}/", p.url or "") for p in s.patches)
        assert s.ordered_topics == ["pf-mape", "dhcp6leased-mape"]
    s78 = series.load("7.8")
    assert all(p.strip == 0 for p in s78.patches)  # every 7.8 text is cvs output (paths from /usr/src)
    assert all(re.search(r"/openbsd-mape-ce/[0-9a-f]{40}/", p.url or "") for p in s78.patches)
    assert [p.name for p in s78.unverified] == ["dhcp6leased-mape-core-78", "dhcp6leasectl-mape-output-78",
                                                "regress-dhcp6leased-mape-78"]
    assert s78.ordered_topics == ["pf-mape", "dhcp6leased-core", "dhcp6leasectl-output", "regress-dhcp6leased"]


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(body)
    return p


HEAD = 'release = "7.6"\n[topics.t]\nsubject = "s"\nrationale = "r"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[patch]]\nname = "a"\ntopic = "t"\nurl = "https://x/a.patch"\n', "needs `sha256"),
        ('[[patch]]\nname = "a"\ntopic = "t"\nurl = "https://x/a"\nsha256 = "' + "a" * 64 + '"\nunverified = true\n',
         "remove `unverified`"),
        ('[[patch]]\nname = "a"\ntopic = "t"\npath = "a"\nstrip = -1\n', "strip must be"),
        ('[[patch]]\nname = "a"\ntopic = "t"\npath = "a"\ncolour = 1\n', "unknown key"),
        ('[[patch]]\nname = "a"\ntopic = "nope"\npath = "a"\n', "topic 'nope'"),
        ('[[patch]]\nname = "a"\ntopic = "t"\npath = "a"\nurl = "https://x"\n', "exactly one of"),
        ('[[patch]]\nname = "a"\ntopic = "t"\nurl = "ftp://x/a"\nunverified = true\n', "must start with"),
        ('[[patch]]\nname = "a"\ntopic = "t"\npath = "a"\n[[patch]]\nname = "a"\ntopic = "t"\npath = "b"\n',
         "repeated: a"),
        ('[[patch]]\nname = "a"\ntopic = "t"\nurl = "https://x/a"\nsha256 = "xyz"\n', "not a sha256"),
        ("", "no \\[\\[patch\\]\\] entries"),
    ],
)
def test_bad_series(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SeriesError, match=message) as e:
        series.load(str(_write(tmp_path, HEAD + body)))
    assert "s.toml" in str(e.value)


def test_bad_toml_and_release(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match=r"not valid TOML"):
        series.load(str(_write(tmp_path, "release = \n")))
    with pytest.raises(SeriesError, match=r"release"):
        series.load(str(_write(tmp_path, 'release = "seven"\n')))


def test_unknown_series_lists_available() -> None:
    with pytest.raises(SeriesError, match=r"available: .*7.6"):
        series.load("6.0")


def test_local_and_url_sources(tmp_path: Path) -> None:
    patch = tmp_path / "ours.diff"
    patch.write_text("--- a\n+++ a\n@@ -1 +1 @@\n-a\n+b\n")
    sha = hashlib.sha256(patch.read_bytes()).hexdigest()
    s = series.load(str(_write(tmp_path, HEAD + f'''
[[patch]]
name = "local"
topic = "t"
path = "ours.diff"

[[patch]]
name = "remote"
topic = "t"
url = "{patch.as_uri()}"
sha256 = "{sha}"

[[patch]]
name = "loose"
topic = "t"
url = "{patch.as_uri()}"
unverified = true
''')))
    local, remote, loose = s.patches
    assert local.path == patch
    assert series.patch_text(local) == patch.read_text() == series.patch_text(remote)
    with pytest.raises(FetchError, match=r"--allow-unverified"):
        series.patch_text(loose)
    assert series.patch_text(loose, allow_unverified=True) == patch.read_text()


def test_git_source(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "patch").mkdir()
    (repo / "patch" / "x.patch").write_text("--- a\n+++ a\n@@ -1 +1 @@\n-a\n+b\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    sha = hashlib.sha256((repo / "patch" / "x.patch").read_bytes()).hexdigest()
    s = series.load(str(_write(tmp_path, HEAD + f'''
[[patch]]
name = "g"
topic = "t"
git = "{repo}"
ref = "{commit}"
file = "patch/x.patch"
sha256 = "{sha}"
''')))
    assert series.patch_text(s.patches[0]).startswith("--- a")
    bad = s.patches[0].__class__(**{**s.patches[0].__dict__, "sha256": "0" * 64})
    with pytest.raises(FetchError, match=r"mismatch: expected 0{64}, got " + sha):
        series.patch_text(bad)
