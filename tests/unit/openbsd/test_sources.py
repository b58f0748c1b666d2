"""fetch-src: a signify-verified release from a (file://) mirror, a git mirror at a ref, a local dir."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from mapelab.openbsd import sources
from mapelab.openbsd.errors import SignifyError, SourceError

from .helpers import make_tree
from .signing import keypair, sign_sums


def _tar(dest: Path, root: Path, members: list[str], prefix: str = "./") -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for m in members:
            tar.add(root / m, arcname=prefix + m)
    return dest


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, Path]:
    """A mirror directory <m>/7.6/ with src.tar.gz, sys.tar.gz and a SHA256.sig signed by a test key."""
    tree = make_tree(tmp_path / "usr-src")
    rel = tmp_path / "mirror" / "7.6"
    rel.mkdir(parents=True)
    _tar(rel / "src.tar.gz", tree, ["sbin", "usr.sbin", "lib", "include", "share", "regress"])
    _tar(rel / "sys.tar.gz", tree, ["sys"], prefix="")
    pub, sec = keypair(tmp_path, "test-76")
    sign_sums(rel, [rel / "src.tar.gz", rel / "sys.tar.gz"], sec)
    return rel.parent, pub


def test_release_verified_and_unpacked(mirror) -> None:
    m, pub = mirror
    spec = sources.SourceSpec("release", release="7.6", mirror=m.as_uri(), key=str(pub))
    tree = sources.obtain(spec)
    assert (tree / "sys/net/pf_lb.c").is_file() and (tree / "sbin/pfctl/parse.y").is_file()
    stamp = sources.describe(tree)
    assert stamp["kind"] == "release" and stamp["release"] == "7.6" and set(stamp["sha256"]) == {
        "src.tar.gz", "sys.tar.gz"}
    assert sources.obtain(spec) == tree  # cached


def test_release_with_the_wrong_key_is_refused(mirror) -> None:
    m, _ = mirror
    spec = sources.SourceSpec("release", release="7.6", mirror=m.as_uri())  # the real pinned 7.6 key
    with pytest.raises(SignifyError, match=r"verify with openbsd-76-base.pub"):
        sources.obtain(spec)


def test_tampered_tarball_is_refused(mirror, _private_cache: Path) -> None:
    m, pub = mirror
    (m / "7.6" / "sys.tar.gz").write_bytes(b"not the signed bytes")
    spec = sources.SourceSpec("release", release="7.6", mirror=m.as_uri(), key=str(pub))
    with pytest.raises(Exception, match=r"sha256 mismatch"):
        sources.obtain(spec)
    assert not (_private_cache / "src").exists() or not any((_private_cache / "src").iterdir())


def test_current_needs_git_or_src() -> None:
    with pytest.raises(SourceError, match=r"--git URL --ref REF"):
        sources.obtain(sources.SourceSpec("release", release="current"))


def test_unsafe_archive_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SourceError, match=r"escapes the tree"):
        sources._unpack([bad], "bad", {})


def test_git_mirror(tmp_path: Path) -> None:
    repo = make_tree(tmp_path / "gitsrc")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"], ["tag", "v1"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    tree = sources.obtain(sources.spec_from_options("current", str(repo), "v1", None))
    assert (tree / "sys/net/pfvar.h").read_text() == (repo / "sys/net/pfvar.h").read_text()
    assert sources.describe(tree)["kind"] == "git"
    with pytest.raises(SourceError, match=r"check the URL and ref"):
        sources.obtain(sources.spec_from_options("current", str(repo), "nope", None))


def test_local(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sources.obtain(sources.spec_from_options(None, None, None, str(tree))) == tree
    monkeypatch.setenv("MAPELAB_OPENBSD_SRC", str(tree))
    assert sources.spec_from_options("7.6", None, None, None).kind == "local"
    with pytest.raises(SourceError, match=r"does not look like /usr/src"):
        sources.obtain(sources.spec_from_options(None, None, None, str(tmp_path)))


def test_option_errors() -> None:
    with pytest.raises(SourceError, match=r"needs --ref"):
        sources.spec_from_options(None, "https://example.org/src.git", None, None)
    with pytest.raises(SourceError, match=r"no source given"):
        sources.spec_from_options(None, None, None, None)
    with pytest.raises(SourceError, match=r"not --git and --src"):
        sources.spec_from_options(None, "x", "y", "z")


def test_cached_release_works_offline(mirror) -> None:
    """Once verified, a release can be reused with the mirror gone; the kept SHA256.sig is re-verified."""
    m, pub = mirror
    spec = sources.SourceSpec("release", release="7.6", mirror=m.as_uri(), key=str(pub))
    tree = sources.obtain(spec)
    import shutil

    shutil.rmtree(m)
    assert sources.obtain(spec) == tree


def test_unpack_keeps_names_and_in_tree_links(tmp_path: Path) -> None:
    arc = tmp_path / "a.tar"
    with tarfile.open(arc, "w") as tar:
        for name, data in (("./.hidden", b"h"), ("./sys/conf/files", b"f")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./sys/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "conf/files"
        tar.addfile(link)
    tree = sources._unpack([arc], "links", {"kind": "test"})
    assert (tree / ".hidden").read_bytes() == b"h"
    assert (tree / "sys/link").read_bytes() == b"f"


def test_unpack_refuses_escaping_link(tmp_path: Path) -> None:
    arc = tmp_path / "b.tar"
    with tarfile.open(arc, "w") as tar:
        link = tarfile.TarInfo("./sys/evil")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(SourceError, match="points outside the tree"):
        sources._unpack([arc], "evil", {})
