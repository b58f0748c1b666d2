"""Probe sector, timeout scaling, QMP parsing, SSH keys and pins, the Linux recipe and mirror."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from mapelab.guests import linux
from mapelab.qemu import accel
from mapelab.qemu.errors import HostKeyMismatch, MachineError
from mapelab.qemu.qmp import parse_usernet_forwards
from mapelab.qemu.ssh import HostKeyPin, cache_key, public_key_line


def test_probe_sector_is_a_boot_sector() -> None:
    s = accel.probe_boot_sector()
    assert len(s) == 512 and s.endswith(b"\x55\xaa") and accel.PROBE_MARKER in s


def test_timeouts_scale_by_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accel.ENV_TIMEOUT_SCALE, raising=False)
    kvm, tcg = accel.Accel("kvm", "x"), accel.Accel("tcg", "x")
    assert kvm.timeout(60) == 60 and tcg.timeout(60) == 240 and tcg.timeout(60, 180) == 180
    monkeypatch.setenv(accel.ENV_TIMEOUT_SCALE, "2")
    assert kvm.timeout(60) == 120 and tcg.timeout(60, 180) == 360


def test_forced_accelerator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(accel.ENV_ACCEL, "tcg")
    a = accel.choose(root=tmp_path)
    assert a.name == "tcg" and a.forced
    assert accel.choose("kvm", root=tmp_path).name == "kvm"
    with pytest.raises(MachineError, match="use kvm or tcg"):
        accel.choose("hvf", root=tmp_path)


USERNET = """Hub -1 (mgmt):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  13       127.0.0.1 46327       10.0.2.15    22     0     0
  TCP[ESTABLISHED]   20       10.0.2.15 51000        10.0.2.2  8080     0     0
"""


def test_usernet_forward_is_read_back() -> None:
    assert parse_usernet_forwards(USERNET) == [("127.0.0.1", 46327, "10.0.2.15", 22)]
    assert parse_usernet_forwards("Hub -1 (mgmt):\n") == []


def test_cache_key_is_ed25519_and_stable(tmp_path: Path) -> None:
    k = cache_key(tmp_path)
    assert oct(k.stat().st_mode & 0o777) == "0o600"
    pkey = paramiko.Ed25519Key.from_private_key_file(str(k))
    assert public_key_line(tmp_path).split()[:2] == [pkey.get_name(), pkey.get_base64()]
    assert cache_key(tmp_path) == k and public_key_line(tmp_path) == public_key_line(tmp_path)


def test_host_key_pin_refuses_a_changed_key(tmp_path: Path) -> None:
    pin = HostKeyPin(tmp_path / "host_key.pub")
    assert pin.get() is None
    pin.pin("ssh-ed25519 AAAAfirst comment")
    pin.pin("ssh-ed25519 AAAAfirst")  # the same key again is fine
    assert pin.get() == "ssh-ed25519 AAAAfirst"
    with pytest.raises(HostKeyMismatch, match="host key changed"):
        pin.pin("ssh-ed25519 AAAAsecond")


def test_recipe_and_key() -> None:
    r = linux.load_recipe()
    assert "python3" in r.packages and "nftables" in r.packages and "linux-image-amd64" in r.packages
    assert "console=ttyS0" in r.cmdline
    d = r.digest()
    assert "packages.txt" in d and "files/usr/local/sbin/mapelab-hostkey" in d


def test_mirror_from_deb822_and_one_line(tmp_path: Path) -> None:
    a = tmp_path / "debian.sources"
    a.write_text("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
                 "Components: main\n\nTypes: deb\nURIs: http://sec.invalid/debian-security\n"
                 "Suites: bookworm-security\nComponents: main\n")
    assert linux.debian_mirror("bookworm", [a]) == "http://mirror.invalid/debian"
    b = tmp_path / "sources.list"
    b.write_text("# comment\ndeb [arch=amd64] http://one.invalid/debian bookworm main\n")
    assert linux.debian_mirror("bookworm", [tmp_path / "missing", b]) == "http://one.invalid/debian"
    with pytest.raises(Exception, match="no apt source for Debian 'trixie'"):
        linux.debian_mirror("trixie", [a, b])
