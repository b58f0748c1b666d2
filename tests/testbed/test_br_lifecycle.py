"""The BR as a process: clean exit on SIGTERM/SIGINT (TUN gone, state files settled), one-line start-up
errors, ``--no-antispoof``, and the test topology itself leaving nothing behind on Ctrl-C or kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP

from tests.testbed.br_fixture import (
    INET_ADDR,
    REPO,
    TUN_NAME,
    BrTopology,
    build,
    ce_socket,
    require_root,
    run,
    socket_in,
    sweep_stale,
)


@pytest.fixture()
def topo() -> Iterator[BrTopology]:
    require_root()
    t = build("cosmote-like")
    try:
        yield t
    finally:
        t.teardown()


def _tun_exists(t: BrTopology) -> bool:
    return run("ip", "-n", t.isp, "link", "show", TUN_NAME, check=False).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_exit_on_signal(topo: BrTopology, sig: int) -> None:
    proc = topo.start_br()
    ready = json.loads((topo.state_dir / "br.ready").read_text())
    assert ready["pid"] == proc.pid and ready["tun"] == TUN_NAME and ready["tunnel_mtu"] == 1452
    assert int((topo.state_dir / "br.pid").read_text()) == proc.pid
    assert _tun_exists(topo)
    t0 = time.monotonic()
    assert topo.stop_br(sig) == 0
    assert time.monotonic() - t0 < 2
    assert not _tun_exists(topo), "TUN device left behind"
    assert not (topo.state_dir / "br.ready").exists() and not (topo.state_dir / "br.pid").exists()
    final = json.loads((topo.state_dir / "br-counters.json").read_text())
    assert final["running"] is False
    assert "stopped" in (topo.state_dir / "br.log").read_text()


def test_startup_errors_are_one_line(topo: BrTopology) -> None:
    topo.start_br()
    # the TUN name is taken by the running BR
    cp = run("ip", "netns", "exec", topo.isp, sys.executable, "-m", "mapelab.testbed.br", "--scenario", "cosmote-like",
             "--tun", TUN_NAME, "--state-dir", str(topo.state_dir / "second"), check=False)
    assert cp.returncode == 2 and "cannot start" in cp.stderr and "Traceback" not in cp.stderr
    assert _tun_exists(topo)  # the running BR is unharmed
    # an unknown scenario
    cp = run("ip", "netns", "exec", topo.isp, sys.executable, "-m", "mapelab.testbed.br", "--scenario", "nope",
             "--tun", "x", "--state-dir", str(topo.state_dir / "third"), check=False)
    assert cp.returncode == 2 and "known scenarios" in cp.stderr
    # the BR address is not assigned in that namespace (a CE namespace)
    cp = run("ip", "netns", "exec", topo.ces[0], sys.executable, "-m", "mapelab.testbed.br", "--scenario",
             "cosmote-like", "--tun", "x", "--state-dir", str(topo.state_dir / "fourth"), check=False)
    assert cp.returncode == 2 and "ip -6 addr add 2001:db8:ffff::1/128" in cp.stderr
    assert run("ip", "-n", topo.ces[0], "link", "show", "x", check=False).returncode != 0


def test_no_antispoof_forwards_a_wrong_port(topo: BrTopology) -> None:
    topo.start_br("--no-antispoof")
    ce = ce_socket(topo, 0)
    srv = socket_in(topo.inet, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((str(INET_ADDR), 7))
    try:
        ce.send(bytes(IP(src="198.51.100.1", dst=str(INET_ADDR)) / UDP(sport=1072, dport=7) / b"x"),
                topo.map_addresses[0], topo.scenario.br)
        assert srv.recvfrom(10)[1] == ("198.51.100.1", 1072)
    finally:
        srv.close()
        ce.close()


_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.testbed.br_fixture import build
t = build("cosmote-like")
t.start_br()
print(t.prefix, t.br_proc.pid, flush=True)
time.sleep(60)
"""


def _child() -> tuple[subprocess.Popen[str], str, int]:
    p = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(REPO))], cwd=REPO, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None
    line = p.stdout.readline().split()
    assert line, "child did not start a topology"
    return p, line[0], int(line[1])


def _ours(prefix: str) -> list[str]:
    return [x.split()[0] for x in run("ip", "netns", "list").stdout.splitlines() if x.startswith(prefix)]


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie child of the (dead) fixture process is reaped by init; wait for it
        time.sleep(0.05)
    return False


def test_ctrl_c_leaves_nothing() -> None:
    require_root()
    p, prefix, br_pid = _child()
    assert len(_ours(prefix)) == 4
    p.send_signal(signal.SIGINT)
    p.wait(10)
    assert _ours(prefix) == []
    assert _gone(br_pid)


def test_kill_9_leftovers_are_swept() -> None:
    require_root()
    p, prefix, br_pid = _child()
    p.kill()
    p.wait(10)
    left = _ours(prefix)
    assert len(left) == 4  # a killed run cannot clean up after itself ...
    removed = sweep_stale()  # ... the next run does
    assert set(left) <= set(removed)
    assert _ours(prefix) == []
    assert _gone(br_pid)
