"""signify: SHA256.sig made in the test verifies; tampering, a wrong key and truncation fail clearly."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mapelab.openbsd import signify
from mapelab.openbsd.errors import SignifyError

from .signing import keypair, sign_sums


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    d = tmp_path / "7.6"
    d.mkdir()
    files = [d / "src.tar.gz", d / "sys.tar.gz"]
    for f in files:
        f.write_bytes(f.name.encode() * 1000)
    pub, sec = keypair(tmp_path, "test-76")
    return d, pub, [sign_sums(d, files, sec), *files]


def test_verifies(release) -> None:
    _, pub, (sig, *files) = release
    key = signify.load_key(str(pub))
    checked = signify.verify_files(sig, files, key)
    assert set(checked) == {"src.tar.gz", "sys.tar.gz"}
    sig_obj, _ = signify.parse_signature(sig.read_bytes(), str(sig))
    assert signify.key_named_in(sig_obj) == "openbsd-76-base.pub"


def test_tampered_file(release) -> None:
    _, pub, (sig, *files) = release
    files[0].write_bytes(b"evil" + files[0].read_bytes())
    with pytest.raises(SignifyError, match=r"src.tar.gz: sha256 .* does not match the signed"):
        signify.verify_files(sig, files, signify.load_key(str(pub)))


def test_tampered_list(release) -> None:
    _, pub, (sig, *files) = release
    sig.write_bytes(sig.read_bytes().replace(b"SHA256 (src", b"SHA256 (Src"))
    with pytest.raises(SignifyError, match=r"does not verify with .*altered or truncated"):
        signify.verify_files(sig, files, signify.load_key(str(pub)))


def test_wrong_key(release, tmp_path: Path) -> None:
    _, _pub, (sig, *files) = release
    other, _ = keypair(tmp_path, "other")
    with pytest.raises(SignifyError, match=r"signed with key number [0-9a-f]{16}, but .*other.pub is key "
                       r"[0-9a-f]{16}; verify with openbsd-76-base.pub"):
        signify.verify_files(sig, files, signify.load_key(str(other)))


def test_wrong_key_same_number(release, tmp_path: Path) -> None:
    """A key claiming the right key number but with other key bytes still fails the Ed25519 check."""
    _, pub, (sig, *files) = release
    other, _ = keypair(tmp_path, "other")
    good = base64.b64decode(pub.read_text().split("\n")[1])
    bad = base64.b64decode(other.read_text().split("\n")[1])
    forged = tmp_path / "forged.pub"
    forged.write_text("untrusted comment: forged\n" + base64.b64encode(good[:10] + bad[10:]).decode() + "\n")
    with pytest.raises(SignifyError, match=r"does not verify"):
        signify.verify_files(sig, files, signify.load_key(str(forged)))


def test_truncated_signature(release) -> None:
    _, pub, (sig, *files) = release
    data = sig.read_bytes()
    line2_end = data.index(b"\n", data.index(b"\n") + 1)
    sig.write_bytes(data[: line2_end - 20] + data[line2_end:])  # base64 line cut short
    with pytest.raises(SignifyError, match=r"truncated or damaged"):
        signify.verify_files(sig, files, signify.load_key(str(pub)))


def test_truncated_file(release) -> None:
    _, pub, (sig, *files) = release
    sig.write_bytes(sig.read_bytes()[:40])
    with pytest.raises(SignifyError, match=r"truncated"):
        signify.verify_files(sig, files, signify.load_key(str(pub)))


def test_signed_list_cut_short(release) -> None:
    _, pub, (sig, *files) = release
    sig.write_bytes(sig.read_bytes()[:-30])
    with pytest.raises(SignifyError, match=r"does not verify"):
        signify.verify_files(sig, files, signify.load_key(str(pub)))


def test_file_not_listed(release, tmp_path: Path) -> None:
    d, pub, (sig, *_files) = release
    extra = d / "ports.tar.gz"
    extra.write_bytes(b"x")
    with pytest.raises(SignifyError, match=r"ports.tar.gz: not listed"):
        signify.verify_files(sig, [extra], signify.load_key(str(pub)))


def test_pinned_keys() -> None:
    keys = signify.pinned_keys()
    assert {f"openbsd-{n}-base.pub" for n in range(72, 82)} <= set(keys)
    assert all(len(k.key) == 32 and len(k.keynum) == 8 for k in keys.values())
    assert len({k.keynum for k in keys.values()}) == len(keys)
    # the 7.6 key number is the one OpenBSD 7.6's SHA256.sig names
    assert keys["openbsd-76-base.pub"].keynum.hex() == "e4bb09f899babca2"


def test_key_for_release() -> None:
    assert signify.key_name_for_release("7.9") == "openbsd-79-base.pub"
    with pytest.raises(SignifyError, match=r"expected a version like 7.6"):
        signify.key_name_for_release("current")


def test_unknown_key() -> None:
    with pytest.raises(SignifyError, match=r"not pinned; pinned keys: .*openbsd-76-base.pub"):
        signify.load_key("openbsd-99-base.pub")


def test_bad_pubkey(tmp_path: Path) -> None:
    p = tmp_path / "x.pub"
    p.write_text("untrusted comment: x\nRWQ=\n")
    with pytest.raises(SignifyError, match=r"expected 42"):
        signify.load_key(str(p))
