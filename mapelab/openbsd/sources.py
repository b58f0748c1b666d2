"""OpenBSD src and sys in ``/usr/src`` shape, from a release, a git mirror or a local directory.

- **release** (``7.6``): ``src.tar.gz`` and ``sys.tar.gz`` from ``<mirror>/<release>/``.
  ``SHA256.sig`` is verified first with the pinned key for that release (:mod:`.signify`);
  its signed list then *is* the sha256 pin of each tarball, so nothing unverified is unpacked.
- **git** (``--git URL_OR_DIR --ref REF``): a mirror of OpenBSD's CVS in git (the only
  practical source for -current, which has no source tarballs); ``git archive`` of the ref.
- **local** (``--src DIR``): a tree you already have, checked for the /usr/src shape and
  used in place.

Unpacked trees live in the cache under ``src/<key>/`` and are written through a temporary
directory renamed at the end, with a ``.mapelab-source.json`` stamp saying what they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write, cache_sub
from . import signify
from .errors import OpenBSDError, SourceError
from .fetch import fetch, stderr_progress

DEFAULT_MIRROR = "https://cdn.openbsd.org/pub/OpenBSD"
ENV_MIRROR = "MAPELAB_OPENBSD_MIRROR"
ENV_SRC = "MAPELAB_OPENBSD_SRC"
STAMP = ".mapelab-source.json"
SHAPE = ("sys", "sbin", "usr.sbin", "lib", "include")


@dataclass
class SourceSpec:
    """Where sources come from; exactly one of release / git / local."""

    kind: str
    release: str | None = None
    mirror: str = field(default_factory=lambda: os.environ.get(ENV_MIRROR, DEFAULT_MIRROR))
    git: str | None = None
    ref: str | None = None
    local: Path | None = None
    sets: tuple[str, ...] = ("src.tar.gz", "sys.tar.gz")
    key: str | None = None  # a pinned key name or a .pub path; default: the release's own key


def check_tree(path: Path, where: str = "source tree") -> Path:
    """Refuse a directory that is not /usr/src-shaped (sys/, sbin/, usr.sbin/, lib/, include/)."""
    if not path.is_dir():
        raise SourceError(f"{where} {path}: not a directory; give the directory that holds sys/ and sbin/")
    missing = [d for d in SHAPE if not (path / d).is_dir()]
    if "sys" in missing or len(missing) > 2:
        raise SourceError(f"{where} {path}: does not look like /usr/src (missing {', '.join(missing)}); "
                          "give the top of the source tree, where sys/ and sbin/ are")
    return path


def _safe_extract(tar: tarfile.TarFile, dest: Path, where: str) -> None:
    """Extract regular files, directories and in-tree links only; refuse anything escaping ``dest``."""
    root = dest.resolve()
    for m in tar:
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        if not name or name == ".":
            continue
        if name.startswith("/") or ".." in Path(name).parts:
            raise SourceError(f"{where}: member {m.name!r} escapes the tree; refusing to unpack this archive")
        if m.issym() or m.islnk():
            base = root / Path(name).parent if m.issym() else root
            target = (base / m.linkname).resolve()
            if os.path.commonpath([root, target]) != str(root):
                raise SourceError(f"{where}: link {m.name!r} points outside the tree; refusing to unpack")
        elif not (m.isfile() or m.isdir()):
            continue
        m.mode &= 0o755 if m.isdir() else 0o775  # no setuid/setgid/sticky bits from an archive
        tar.extract(m, root, set_attrs=True)


def _unpack(archives: list[Path], key: str, stamp: dict) -> Path:
    final = cache_sub("src") / key
    if (final / STAMP).is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        for a in archives:
            with tarfile.open(a, "r:*") as tar:
                _safe_extract(tar, tmp, str(a))
        atomic_write(tmp / STAMP, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def fetch_release(spec: SourceSpec) -> Path:
    """Download, verify (signify, then sha256) and unpack a release's src and sys sets."""
    assert spec.release
    base = f"{spec.mirror.rstrip('/')}/{spec.release}"
    key = signify.load_key(spec.key or signify.key_name_for_release(spec.release))
    kept = cache_sub("releases", spec.release) / "SHA256.sig"  # the last copy that verified
    try:
        sig_bytes = fetch(f"{base}/SHA256.sig", allow_unverified=True, name="SHA256.sig").path.read_bytes()
    except OpenBSDError:
        if not kept.is_file():
            raise
        print(f"note: {base}/SHA256.sig unreachable; using the copy verified earlier", file=sys.stderr)
        sig_bytes = kept.read_bytes()
    message = signify.verify_embedded(sig_bytes, key, f"{base}/SHA256.sig")  # whichever copy: verify it now
    atomic_write(kept, sig_bytes)
    sums = signify.parse_checksums(message, f"{base}/SHA256.sig")
    archives: list[Path] = []
    for name in spec.sets:
        if name not in sums:
            raise SourceError(f"{base}/SHA256.sig does not list {name}; is {spec.release} a release with sources?")
        archives.append(fetch(f"{base}/{name}", sums[name], name=name, progress=stderr_progress).path)
    ident = hashlib.sha256("".join(sums[n] for n in spec.sets).encode()).hexdigest()[:12]
    stamp = {"kind": "release", "release": spec.release, "mirror": spec.mirror, "key": key.source,
             "sha256": {n: sums[n] for n in spec.sets}}
    return _unpack(archives, f"{spec.release}-{ident}", stamp)


def fetch_git(spec: SourceSpec) -> Path:
    """``git archive`` of ``spec.ref`` from a local repository or a bare clone in the cache."""
    assert spec.git and spec.ref
    local = Path(spec.git)
    if local.is_dir():
        gitdir = local if (local / "HEAD").exists() and not (local / ".git").exists() else local / ".git"
    else:
        gitdir = cache_sub("git") / hashlib.sha256(spec.git.encode()).hexdigest()[:16]
        if not (gitdir / "HEAD").exists():
            _git(["clone", "--bare", "--quiet", spec.git, str(gitdir)], spec)
    commit = _git(["--git-dir", str(gitdir), "rev-parse", "--verify", f"{spec.ref}^{{commit}}"], spec).strip()
    final_key = f"git-{commit[:12]}"
    final = cache_sub("src") / final_key
    if (final / STAMP).is_file():
        return final
    with tempfile.TemporaryDirectory(dir=cache_sub("downloads")) as td:
        tarball = Path(td) / "tree.tar"
        with open(tarball, "wb") as f:
            proc = subprocess.run(["git", "--git-dir", str(gitdir), "archive", "--format=tar", commit],
                                  stdout=f, stderr=subprocess.PIPE)
        if proc.returncode:
            raise SourceError(f"git archive {commit} from {spec.git} failed: {proc.stderr.decode()[:200]}")
        stamp = {"kind": "git", "git": spec.git, "ref": spec.ref, "commit": commit}
        return _unpack([tarball], final_key, stamp)


def _git(args: list[str], spec: SourceSpec) -> str:
    try:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", "") or str(e)
        raise SourceError(f"git {spec.git} at {spec.ref}: {err.strip()[:200]}; check the URL and ref") from None


def obtain(spec: SourceSpec) -> Path:
    """The /usr/src-shaped tree for ``spec`` (downloaded and unpacked on first use)."""
    if spec.kind == "local":
        assert spec.local
        return check_tree(spec.local.expanduser().absolute(), "--src")
    if spec.kind == "git":
        tree = fetch_git(spec)
    elif spec.kind == "release":
        if spec.release == "current":
            raise SourceError("release current has no source tarballs; use --git URL --ref REF (a git mirror of "
                              "OpenBSD's src) or --src DIR")
        tree = fetch_release(spec)
    else:
        raise SourceError(f"unknown source kind {spec.kind!r}; use release, git or local")
    return check_tree(tree, f"{spec.kind} source")


def describe(tree: Path) -> dict:
    """What a tree is, from its stamp (or ``local`` when it has none)."""
    stamp = tree / STAMP
    if stamp.is_file():
        try:
            return json.loads(stamp.read_text())
        except ValueError:
            pass
    return {"kind": "local", "path": str(tree)}


def spec_from_options(release: str | None, git: str | None, ref: str | None, src: str | None,
                      mirror: str | None = None) -> SourceSpec:
    """Turn task options into a spec; ``$MAPELAB_OPENBSD_SRC`` stands in for ``--src``."""
    src = src or os.environ.get(ENV_SRC)
    chosen = [n for n, v in (("--git", git), ("--src", src)) if v]
    if len(chosen) > 1:
        raise SourceError(f"give one of --release, --git or --src, not {' and '.join(chosen)}")
    if src:
        return SourceSpec("local", release=release, local=Path(src))
    if git:
        if not ref:
            raise SourceError(f"--git {git}: needs --ref (a branch, tag or commit of the mirror)")
        return SourceSpec("git", release=release, git=git, ref=ref)
    if not release:
        raise SourceError("no source given: pass --release 7.6, --git URL --ref REF, or --src /usr/src")
    spec = SourceSpec("release", release=release)
    if mirror:
        spec.mirror = mirror
    return spec
