"""signify(1) verification, done by mapelab itself with Ed25519 from ``cryptography``.

OpenBSD signs each release directory's ``SHA256`` list; ``SHA256.sig`` is an *embedded*
signature: two lines (``untrusted comment: verify with openbsd-NN-base.pub`` and the base64
signature) followed by the signed message, the ``SHA256 (file) = hex`` lines.  A public key is
``Ed`` + an 8-byte key number + 32 key bytes; a signature is ``Ed`` + key number + 64 bytes.

We do this ourselves rather than call a ``signify`` binary because hosts rarely have one with
current keys (Debian's key package stops at 7.3), and because the keys we trust must be
pinned in this repository (``keys/``, copied from OpenBSD's ``etc/signify``), not whatever a
host happens to have installed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..files import sha256_file
from .errors import SignifyError

KEYS_DIR = Path(__file__).resolve().parent / "keys"
_PKALG = b"Ed"
_COMMENT = "untrusted comment: "
_SUMLINE = re.compile(r"^SHA256 \((?P<name>.+)\) = (?P<hex>[0-9a-f]{64})$")


@dataclass(frozen=True)
class PublicKey:
    """A signify public key: its 8-byte number (which signatures must name) and Ed25519 key."""

    keynum: bytes
    key: bytes
    comment: str
    source: str


@dataclass(frozen=True)
class Signature:
    keynum: bytes
    sig: bytes
    comment: str


def _two_lines(data: bytes, where: str, what: str) -> tuple[str, bytes, bytes]:
    """Split ``untrusted comment: …\\n<base64>\\n<rest>``; return comment, decoded blob, rest."""
    try:
        text_end = data.index(b"\n")
        b64_end = data.index(b"\n", text_end + 1)
    except ValueError:
        raise SignifyError(f"{where}: not a signify {what} (needs a comment line and a base64 line); "
                           "the file is truncated or not what it claims to be") from None
    comment = data[:text_end].decode("utf-8", "replace")
    if not comment.startswith(_COMMENT):
        raise SignifyError(f"{where}: first line must start with {_COMMENT!r}; not a signify {what}")
    try:
        blob = base64.b64decode(data[text_end + 1 : b64_end], validate=True)
    except (binascii.Error, ValueError):
        raise SignifyError(f"{where}: the {what} line is not valid base64; the file is truncated or damaged, "
                           "download it again") from None
    return comment[len(_COMMENT):], blob, data[b64_end + 1 :]


def parse_pubkey(data: bytes, where: str) -> PublicKey:
    """Parse a ``.pub`` file's bytes (``where`` names it in errors)."""
    comment, blob, _ = _two_lines(data, where, "public key")
    if len(blob) != 42 or blob[:2] != _PKALG:
        raise SignifyError(f"{where}: public key is {len(blob)} bytes, expected 42 starting with 'Ed'; "
                           "use an openbsd-NN-base.pub file")
    return PublicKey(blob[2:10], blob[10:], comment, where)


def parse_signature(data: bytes, where: str) -> tuple[Signature, bytes]:
    """Parse an embedded signature file: the signature and the message that follows it."""
    comment, blob, message = _two_lines(data, where, "signature")
    if len(blob) != 74 or blob[:2] != _PKALG:
        raise SignifyError(f"{where}: signature is {len(blob)} bytes, expected 74 starting with 'Ed'; "
                           "the file is truncated or damaged, download it again")
    return Signature(blob[2:10], blob[10:], comment), message


def pinned_keys() -> dict[str, PublicKey]:
    """Every key shipped in ``keys/``, by file name."""
    return {p.name: parse_pubkey(p.read_bytes(), str(p)) for p in sorted(KEYS_DIR.glob("*.pub"))}


def key_name_for_release(release: str) -> str:
    """``7.6`` → ``openbsd-76-base.pub`` (the key that signs that release's sets)."""
    m = re.fullmatch(r"(\d)\.(\d)", release.strip())
    if not m:
        raise SignifyError(f"release {release!r}: expected a version like 7.6")
    return f"openbsd-{m.group(1)}{m.group(2)}-base.pub"


def load_key(name_or_path: str) -> PublicKey:
    """A pinned key by file name (``openbsd-79-base.pub``) or any ``.pub`` file by path."""
    path = Path(name_or_path)
    if not path.exists():
        path = KEYS_DIR / name_or_path
    if not path.exists():
        have = ", ".join(sorted(pinned_keys()))
        raise SignifyError(f"signify key {name_or_path!r} is not pinned; pinned keys: {have}; "
                           "add the key from OpenBSD's etc/signify to mapelab/openbsd/keys/")
    return parse_pubkey(path.read_bytes(), str(path))


def key_named_in(sig: Signature) -> str | None:
    """The key file a signature's comment names (``verify with openbsd-79-base.pub``), if any."""
    m = re.search(r"verify with (\S+\.pub)", sig.comment)
    return m.group(1) if m else None


def verify_embedded(data: bytes, key: PublicKey, where: str) -> bytes:
    """Check an embedded signature with ``key``; return the signed message (the SHA256 lines)."""
    sig, message = parse_signature(data, where)
    if sig.keynum != key.keynum:
        named = key_named_in(sig) or "the key its comment names"
        raise SignifyError(f"{where}: signed with key number {sig.keynum.hex()}, but {key.source} is key "
                           f"{key.keynum.hex()}; verify with {named}")
    try:
        Ed25519PublicKey.from_public_bytes(key.key).verify(sig.sig, message)
    except InvalidSignature:
        raise SignifyError(f"{where}: signature does not verify with {key.source}: the checksum list was "
                           "altered or truncated; download it again from another mirror") from None
    return message


def parse_checksums(message: bytes, where: str) -> dict[str, str]:
    """``SHA256 (name) = hex`` lines → {name: hex}; other digest lines are ignored."""
    sums: dict[str, str] = {}
    for line in message.decode("utf-8", "replace").splitlines():
        m = _SUMLINE.match(line)
        if m:
            sums[m.group("name")] = m.group("hex")
    if not sums:
        raise SignifyError(f"{where}: the signed message has no 'SHA256 (file) = hex' lines")
    return sums


def verify_files(sigfile: Path, files: list[Path], key: PublicKey) -> dict[str, str]:
    """Verify ``sigfile`` with ``key``, then each file's sha256 against the signed list.

    Returns {name: sha256} of the files checked.  A file missing from the list, or whose hash
    differs, is an error naming the file: it must never be used.
    """
    sums = parse_checksums(verify_embedded(sigfile.read_bytes(), key, str(sigfile)), str(sigfile))
    checked: dict[str, str] = {}
    for f in files:
        want = sums.get(f.name)
        if want is None:
            raise SignifyError(f"{f}: not listed in {sigfile}; it is not part of this signed release")
        got = sha256_file(f)
        if got != want:
            raise SignifyError(f"{f}: sha256 {got} does not match the signed {want} in {sigfile}; "
                               "the file is damaged or tampered with: delete it and download again")
        checked[f.name] = got
    return checked
