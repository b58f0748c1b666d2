"""Make signify keys and embedded SHA256.sig files with Debian's signify-openbsd, inside the tests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

SIGNIFY = shutil.which("signify-openbsd") or "/usr/bin/signify-openbsd"


def need_signify() -> None:
    if not Path(SIGNIFY).exists():
        pytest.skip("signify-openbsd is not installed (Debian: apt-get install signify-openbsd)")


def keypair(d: Path, name: str) -> tuple[Path, Path]:
    need_signify()
    pub, sec = d / f"{name}.pub", d / f"{name}.sec"
    subprocess.run([SIGNIFY, "-G", "-n", "-c", f"{name} public key", "-p", str(pub), "-s", str(sec)], check=True)
    return pub, sec


def sign_sums(d: Path, files: list[Path], sec: Path, keyname: str = "openbsd-76-base.pub") -> Path:
    """Write SHA256 for ``files`` in BSD format and sign it embedded, as OpenBSD's release dirs have it."""
    lines = [f"SHA256 ({f.name}) = {hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files]
    sums = d / "SHA256"
    sums.write_text("".join(lines))
    sig = d / "SHA256.sig"
    subprocess.run([SIGNIFY, "-S", "-e", "-s", str(sec), "-m", str(sums), "-x", str(sig)], check=True)
    # OpenBSD's comment names the key to verify with; signify writes "signature from …": make it the same
    text = sig.read_bytes().split(b"\n", 1)
    sig.write_bytes(b"untrusted comment: verify with " + keyname.encode() + b"\n" + text[1])
    return sig
