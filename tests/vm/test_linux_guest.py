"""The CI Linux guest, end to end under TCG: boots on an overlay with two TAPs, answers SSH with a
pinned host key, runs commands over SSH and on the serial console, moves files keeping mtimes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mapelab.guests import linux
from mapelab.qemu import images
from mapelab.qemu.errors import HostKeyMismatch
from mapelab.qemu.spec import TapNic
from mapelab.qemu.ssh import HostKeyPin, Ssh


def _link_local(dev: str, wait: float = 10.0) -> str | None:
    """The host's fe80:: address on ``dev`` once DAD has finished, or None."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link"],
                             capture_output=True, text=True).stdout
        if "fe80::" in out and "tentative" not in out:
            return out.split("inet6 ")[1].split("/")[0]
        time.sleep(0.3)
    return None


@pytest.fixture
def taps():
    """Two TAP devices made the way the testbed makes them (it owns them; QEMU only attaches)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("creating TAP devices needs root and iproute2")
    names = [f"mlq{os.getpid() % 100000}{s}" for s in ("w", "l")]
    for n in names:
        r = subprocess.run(["ip", "tuntap", "add", n, "mode", "tap"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot create TAP {n}: {r.stderr.strip()}")
    yield names
    for n in names:
        subprocess.run(["ip", "link", "del", n], capture_output=True)


def test_guest_boots_answers_ssh_and_console(linux_image: images.Image, taps: list[str], tmp_path: Path) -> None:
    t0 = time.monotonic()
    with linux.boot(taps=[TapNic(taps[0], host_mtu=1460), taps[1]], accel="tcg") as g:
        boot_to_ssh = time.monotonic() - t0
        print(f"boot-to-SSH under TCG: {boot_to_ssh:.1f}s ({g.timings})")
        run_dir = g.machine.run_dir
        # SSH: exit status, streamed output, stderr
        chunks: list[str] = []
        r = g.run("for i in 1 2 3; do echo line$i; done; echo err >&2; exit 3", on_stdout=chunks.append)
        assert (r.status, r.stdout, r.stderr) == (3, "line1\nline2\nline3\n", "err\n")
        assert "".join(chunks) == r.stdout
        # what the reference CE needs inside the guest
        r = g.run("python3 -c 'print(1)' && nft --version && ip -V && grep -c ip6_tunnel /proc/modules", check=True)
        assert "nftables" in r.stdout
        # the TAPs are the guest's NICs, found by MAC, and carry packets (IPv6 link-local: no host routes)
        ifaces = {t: g.iface_for_tap(t) for t in taps}
        assert len(set(ifaces.values())) == 2
        assert "mtu 1460 " in g.run(f"ip -o link show {ifaces[taps[0]]}").stdout  # the WAN MTU, told by QEMU
        for tap, iface in ifaces.items():
            subprocess.run(["ip", "link", "set", tap, "up"], check=True)
            g.run(f"ip link set {iface} up", check=True)
            host_ll = _link_local(tap)
            if host_ll is None:
                pytest.skip(f"no IPv6 link-local address on {tap} (IPv6 disabled on this host?)")
            r = g.run(f"ping -6 -c 1 -W 2 -w 20 {host_ll}%{iface}", timeout=60)
            assert r.status == 0, (tap, iface, r.stdout, r.stderr)
        # SFTP keeps mtimes both ways
        src = tmp_path / "up.txt"
        src.write_text("payload\n")
        os.utime(src, (1_000_000_000, 1_000_000_000))
        g.ssh.put(src, "/root/up.txt")
        assert g.run("stat -c %Y /root/up.txt").stdout.strip() == "1000000000"
        g.ssh.get("/root/up.txt", tmp_path / "down.txt")
        assert (tmp_path / "down.txt").read_text() == "payload\n"
        assert int((tmp_path / "down.txt").stat().st_mtime) == 1_000_000_000
        # a whole tree in one tar stream, mtimes kept (how mapelab's code or a source tree goes in)
        tree = tmp_path / "tree"
        (tree / "pkg" / "__pycache__").mkdir(parents=True)
        (tree / "pkg" / "mod.py").write_text("X = 1\n")
        (tree / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"junk")
        os.utime(tree / "pkg" / "mod.py", (1_100_000_000, 1_100_000_000))
        g.ssh.put_tree(tree, "/opt/t")
        r = g.run("stat -c %Y /opt/t/pkg/mod.py; ls -a /opt/t/pkg; "
                  "cd /opt/t && python3 -c 'import pkg.mod as m; print(m.X)'")
        assert r.stdout.split() == ["1100000000", ".", "..", "mod.py", "1"], r
        # the serial console shell helper: status and output behind a unique prompt
        con = g.console_shell()
        assert con.run("echo console-ok; exit_code=4; (exit $exit_code)") == (4, "console-ok")
        assert con.run("cat /proc/cmdline")[1].startswith("root=/dev/vda")
        # the pinned host key: a different pin is refused, the real one accepted
        pinned = HostKeyPin(run_dir / "host_key.pub").get()
        assert pinned and pinned.startswith("ssh-ed25519 ")
        wrong = HostKeyPin(tmp_path / "wrong.pub")
        wrong.pin("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake")
        with pytest.raises(HostKeyMismatch, match="host key changed"):
            Ssh("127.0.0.1", g.ssh.port, pin=wrong, trust_first=False).connect()
        machine = g.machine
    # leaving the block stopped QEMU through QMP and kept how it ended
    assert machine.exit_status == 0 and "QMP quit" in (machine.exit_reason or "")
    assert not machine.running()
    assert not run_dir.exists()  # a clean run leaves no overlay behind
    assert all(run_dir / "disk.qcow2" != o for o in linux_image.overlays())
