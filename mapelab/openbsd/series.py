"""Series files: an ordered list of patches for one OpenBSD release, and the topics they form.

A series lives in ``patches/NAME.toml`` (the default one for a release is ``patches/<release>.toml``,
e.g. ``7.6.toml`` or ``current.toml``)::

    release = "7.6"
    description = "…"
    topic_order = ["pf-mape"]   # optional: the order tech@ reviews the topics (default: order of
                                # first use in [[patch]], i.e. the order the patches apply)

    [topics.pf-mape]
    subject = "pf: map-e-portset pool option for MAP-E CEs (RFC 7597)"
    rationale = "…"             # becomes the mail's body

    [[patch]]
    name = "mape76"
    topic = "pf-mape"
    url = "https://…/mape76.patch"      # or path = "ours/x.diff" (relative to the series file)
    sha256 = "5817…"                     #    or git = "https://…", ref = "<commit>", file = "patch/x.patch"
    strip = 0                            # patch -p level; 0 = paths relative to /usr/src
    releases = ["7.6"]

A piece of work published as several diffs (the dhcp6leased work: core, dhcp6leasectl output,
regress) is several patches, each with its own topic, so ``invoke submission`` writes one
mail per piece in ``topic_order``.

A URL or git source without ``sha256`` must say ``unverified = true``: it is then refused
unless the user passes ``--allow-unverified``.  This keeps third-party text out of the
repository while making every byte we apply either pinned or knowingly unpinned.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..files import cache_sub
from .errors import FetchError, SeriesError
from .fetch import check_sha256, fetch

SERIES_DIR = Path(__file__).resolve().parents[2] / "patches"
_RELEASE = re.compile(r"^(\d\.\d|current)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Topic:
    """One tech@ thread: a subject and a short rationale."""

    name: str
    subject: str
    rationale: str


@dataclass(frozen=True)
class PatchRef:
    """Where one patch comes from and how to apply it."""

    name: str
    topic: str
    strip: int
    releases: tuple[str, ...]
    url: str | None = None
    path: Path | None = None
    git: str | None = None
    ref: str | None = None
    file: str | None = None
    sha256: str | None = None
    unverified: bool = False
    notes: str = ""

    @property
    def kind(self) -> str:
        return "url" if self.url else ("git" if self.git else "path")

    @property
    def source(self) -> str:
        if self.url:
            return self.url
        if self.git:
            return f"{self.git} {self.ref}:{self.file}"
        return str(self.path)


@dataclass(frozen=True)
class Series:
    name: str
    path: Path
    release: str
    description: str
    patches: tuple[PatchRef, ...]
    topics: dict[str, Topic] = field(default_factory=dict)
    topic_order: tuple[str, ...] = ()

    @property
    def unverified(self) -> list[PatchRef]:
        return [p for p in self.patches if p.unverified]

    @property
    def ordered_topics(self) -> list[str]:
        """Topics in review order: ``topic_order`` if given, else the order patches first use them."""
        if self.topic_order:
            return list(self.topic_order)
        seen: list[str] = []
        for p in self.patches:
            if p.topic not in seen:
                seen.append(p.topic)
        return seen + [t for t in self.topics if t not in seen]

    def for_topic(self, topic: str) -> list[PatchRef]:
        return [p for p in self.patches if p.topic == topic]


def _fail(path: Path, msg: str) -> SeriesError:
    return SeriesError(f"{path}: {msg}")


def _str(d: dict[str, Any], key: str, path: Path, where: str, required: bool = True) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _fail(path, f"{where}: missing `{key}`")
        return None
    if not isinstance(v, str) or not v.strip():
        raise _fail(path, f"{where}: `{key}` must be a non-empty string")
    return v.strip()


def _patch(d: dict[str, Any], n: int, path: Path, release: str) -> PatchRef:
    where = f"[[patch]] #{n}"
    name = _str(d, "name", path, where)
    assert name is not None
    if not _NAME.match(name):
        raise _fail(path, f"{where}: name {name!r} must be letters, digits, '.', '_' or '-'")
    where = f"patch {name!r}"
    known = {"name", "topic", "url", "path", "git", "ref", "file", "sha256", "strip", "releases", "unverified", "notes"}
    extra = sorted(set(d) - known)
    if extra:
        raise _fail(path, f"{where}: unknown key(s) {', '.join(extra)}; known keys: {', '.join(sorted(known))}")
    sources = [k for k in ("url", "path", "git") if k in d]
    if len(sources) != 1:
        raise _fail(path, f"{where}: give exactly one of url, path or git (found {sources or 'none'})")
    strip = d.get("strip", 0)
    if not isinstance(strip, int) or isinstance(strip, bool) or not 0 <= strip <= 8:
        raise _fail(path, f"{where}: strip must be an integer 0..8 (the patch -p level), not {strip!r}")
    releases = d.get("releases", [release])
    if not isinstance(releases, list) or not all(isinstance(r, str) and _RELEASE.match(r) for r in releases):
        raise _fail(path, f"{where}: releases must be a list like [\"7.6\"] or [\"current\"]")
    sha = d.get("sha256")
    if sha is not None:
        try:
            sha = check_sha256(str(sha), f"{path}: {where}: sha256")
        except FetchError as e:
            raise SeriesError(str(e)) from None
    unverified = d.get("unverified", False)
    if not isinstance(unverified, bool):
        raise _fail(path, f"{where}: unverified must be true or false")
    kind = sources[0]
    if kind != "path" and sha is None and not unverified:
        raise _fail(path, f"{where}: a {kind} source needs `sha256 = \"…\"`, or `unverified = true` to mark it "
                    "as not pinned yet")
    if sha is not None and unverified:
        raise _fail(path, f"{where}: has a sha256 pin and unverified = true; remove `unverified`")
    ref = PatchRef(
        name=name, topic=_str(d, "topic", path, where) or "", strip=strip, releases=tuple(releases),
        sha256=sha, unverified=unverified, notes=str(d.get("notes", "")),
    )
    if kind == "url":
        url = _str(d, "url", path, where)
        if not url or not re.match(r"^(https?|file)://", url):
            raise _fail(path, f"{where}: url {url!r} must start with https://, http:// or file://")
        return _replace(ref, url=url)
    if kind == "path":
        p = Path(_str(d, "path", path, where) or "")
        return _replace(ref, path=p if p.is_absolute() else (path.parent / p))
    for k in ("ref", "file"):
        _str(d, k, path, where)
    return _replace(ref, git=_str(d, "git", path, where), ref=_str(d, "ref", path, where),
                    file=_str(d, "file", path, where))


def _replace(base: PatchRef, **kw: Any) -> PatchRef:
    return replace(base, **kw)


def resolve_path(name_or_path: str) -> Path:
    """A series name (``7.6``, ``current``) → ``patches/<name>.toml``; a path is used as is."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or "/" in name_or_path:
        return p
    return SERIES_DIR / f"{name_or_path}.toml"


def available() -> list[str]:
    return sorted(p.stem for p in SERIES_DIR.glob("*.toml"))


def load(name_or_path: str) -> Series:
    """Read and validate a series file; every error names the file, the entry and the fix."""
    path = resolve_path(name_or_path)
    if not path.is_file():
        raise SeriesError(f"series {name_or_path!r}: no file {path}; available: {', '.join(available()) or 'none'}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise _fail(path, f"not valid TOML ({e})") from None
    release = data.get("release")
    if not isinstance(release, str) or not _RELEASE.match(release):
        raise _fail(path, f"`release` must be like \"7.6\" or \"current\", not {release!r}")
    topics: dict[str, Topic] = {}
    for tname, t in (data.get("topics") or {}).items():
        if not isinstance(t, dict):
            raise _fail(path, f"[topics.{tname}] must be a table with subject and rationale")
        topics[tname] = Topic(tname, _str(t, "subject", path, f"[topics.{tname}]") or "",
                              _str(t, "rationale", path, f"[topics.{tname}]") or "")
    raw = data.get("patch")
    if not isinstance(raw, list) or not raw:
        raise _fail(path, "no [[patch]] entries; a series lists at least one patch")
    patches = tuple(_patch(d, n, path, release) for n, d in enumerate(raw, 1))
    names = [p.name for p in patches]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _fail(path, f"patch names must be unique; repeated: {', '.join(dup)}")
    for p in patches:
        if p.topic not in topics:
            raise _fail(path, f"patch {p.name!r}: topic {p.topic!r} has no [topics.{p.topic}] table "
                        f"(known: {', '.join(topics) or 'none'})")
    order = _topic_order(data.get("topic_order"), topics, path)
    return Series(path.stem, path, release, str(data.get("description", "")), patches, topics, order)


def _topic_order(raw: Any, topics: dict[str, Topic], path: Path) -> tuple[str, ...]:
    """``topic_order``: every topic exactly once, or absent."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise _fail(path, "topic_order must be a list of topic names, e.g. [\"pf-mape\", \"dhcp6leased-core\"]")
    unknown = [t for t in raw if t not in topics]
    missing = [t for t in topics if t not in raw]
    repeated = sorted({t for t in raw if raw.count(t) > 1})
    if unknown or missing or repeated:
        bits = [f"unknown {', '.join(unknown)}" if unknown else "", f"missing {', '.join(missing)}" if missing else "",
                f"repeated {', '.join(repeated)}" if repeated else ""]
        raise _fail(path, f"topic_order must name every [topics.*] table once ({'; '.join(b for b in bits if b)})")
    return tuple(raw)


def patch_text(ref: PatchRef, *, allow_unverified: bool = False) -> str:
    """The text of one patch, fetched or read, verified against its pin when it has one."""
    if ref.kind == "url":
        assert ref.url is not None
        got = fetch(ref.url, ref.sha256, allow_unverified=allow_unverified, name=f"{ref.name}.patch")
        if not got.verified:
            print(f"warning: {ref.name}: using unverified {ref.url} (sha256 {got.sha256}); pin it in the series")
        return got.path.read_bytes().decode("utf-8", "surrogateescape")
    if ref.kind == "path":
        assert ref.path is not None
        if not ref.path.is_file():
            raise SeriesError(f"patch {ref.name!r}: local file {ref.path} not found; fix `path` in the series")
        data = ref.path.read_bytes()
    else:
        if ref.sha256 is None and not allow_unverified:
            raise FetchError(f"{ref.source}: no sha256 pinned; add one to the series entry or pass --allow-unverified")
        data = _git_show(ref)
    if ref.sha256 is not None:
        got_sha = hashlib.sha256(data).hexdigest()
        if got_sha != ref.sha256:
            raise FetchError(f"{ref.source}: sha256 mismatch: expected {ref.sha256}, got {got_sha}; "
                             "update the pin only if the new content is trusted")
    return data.decode("utf-8", "surrogateescape")


def _git_show(ref: PatchRef) -> bytes:
    """``git show ref:file`` from a bare clone cached under ``git/``."""
    assert ref.git and ref.ref and ref.file
    repo = cache_sub("git") / hashlib.sha256(ref.git.encode()).hexdigest()[:16]
    try:
        if not (repo / "HEAD").exists():
            subprocess.run(["git", "clone", "--bare", "--quiet", ref.git, str(repo)], check=True,
                           capture_output=True, text=True)
        show = subprocess.run(["git", "--git-dir", str(repo), "show", f"{ref.ref}:{ref.file}"],
                              capture_output=True)
        if show.returncode != 0:
            subprocess.run(["git", "--git-dir", str(repo), "fetch", "--quiet", "origin", ref.ref], check=True,
                           capture_output=True, text=True)
            show = subprocess.run(["git", "--git-dir", str(repo), "show", f"{ref.ref}:{ref.file}"],
                                  capture_output=True, check=True)
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"")
        msg = err.decode(errors="replace") if isinstance(err, bytes) else err
        raise FetchError(f"{ref.source}: git failed ({msg.strip()[:200]}); check the repository, ref and file"
                         ) from None
    return show.stdout
