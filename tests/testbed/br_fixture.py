"""A minimal topology for testing the BR process alone: ``ip netns`` + veth, unique names, guaranteed teardown.

::

    ce1 (MAP addr, wan) ──veth── c1 ┐
    ce2 (MAP addr, wan) ──veth── c2 ├ isp (BR address on lo, TUN, the BR process) ── inet ──veth── eth0 inet
                                    ┘                                          198.18.0.1     198.18.0.2

Every namespace is named ``mlbr<pid>-<n>-<role>`` so parallel runs (and other engineers'
testbeds) never collide; interfaces live only inside those namespaces.  Teardown kills the
BR by its PID and deletes the namespaces (taking their interfaces with them); an ``atexit``
hook repeats it for interrupted runs, and :func:`sweep_stale` removes what a killed run left
(namespaces of this pattern whose owning pytest PID is gone, and the processes inside them).

The BR is started exactly as the testbed will start it: ``ip netns exec <isp> python -m
mapelab.testbed.br --scenario … --tun … --state-dir …``, then routes for the rule IPv4
prefixes are added through its TUN device once ``br.ready`` exists.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from mapelab.scenario import Scenario, load

REPO = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
INET_ADDR = IPv4Address("198.18.0.2")
ISP_INET_ADDR = IPv4Address("198.18.0.1")
TUN_NAME = "mlbrtun"
_PATTERN = re.compile(r"^mlbr(\d+)-\d+-")
_counter = itertools.count(1)
_live: list[BrTopology] = []
_libc = ctypes.CDLL(None, use_errno=True)


def require_root() -> None:
    """Skip (with the reason) where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("BR testbed tests need root (network namespaces, TUN, raw sockets)")
    if not Path("/dev/net/tun").exists():
        pytest.skip("BR testbed tests need /dev/net/tun")


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(cmd, capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block in namespace ``name`` (this thread only); sockets made inside stay there."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(orig)
        os.close(target)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_ns(name: str) -> None:
    """Kill what runs in ``name`` (processes this suite started there), then delete it."""
    pids = run("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "netns", "del", name, check=False)


def sweep_stale() -> list[str]:
    """Remove namespaces (and state directories) a killed run of these tests left: the owner PID
    in the name is gone.  Returns the namespaces removed."""
    removed = []
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _PATTERN.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _delete_ns(name)
            removed.append(name)
    for d in Path(tempfile.gettempdir()).glob("mlbr*-*"):  # their state directories too
        m = _PATTERN.match(d.name)
        if m and d.is_dir() and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    return removed


@dataclass
class BrTopology:
    scenario: Scenario
    prefix: str
    state_dir: Path
    isp: str
    inet: str
    ces: list[str]
    map_addresses: list[IPv6Address]
    br_proc: subprocess.Popen[bytes] | None = None
    namespaces: list[str] = field(default_factory=list)

    # -- BR process ----------------------------------------------------------------------------------

    def start_br(self, *extra: str, timeout: float = 15.0) -> subprocess.Popen[bytes]:
        """Start the BR with the documented contract and wait for ``br.ready``; add the routes."""
        assert self.br_proc is None, "BR already running"
        for f in ("br-counters.json", "br-flows.jsonl", "br.log"):
            (self.state_dir / f).unlink(missing_ok=True)
        log = open(self.state_dir / "br.log", "wb")  # noqa: SIM115 - the child owns it
        cmd = ["ip", "netns", "exec", self.isp, sys.executable, "-m", "mapelab.testbed.br",
               "--scenario", str(self.scenario.path), "--tun", TUN_NAME, "--state-dir", str(self.state_dir), *extra]
        self.br_proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not (self.state_dir / "br.ready").exists():
            if self.br_proc.poll() is not None:
                out = (self.state_dir / "br.log").read_text()
                self.br_proc = None
                raise RuntimeError(f"BR exited during start-up: {out}")
            if time.monotonic() > deadline:
                raise RuntimeError("BR did not become ready in time: " + (self.state_dir / "br.log").read_text())
            time.sleep(0.02)
        for rule in self.scenario.rules:
            run("ip", "-n", self.isp, "route", "replace", str(rule.ipv4_prefix), "dev", TUN_NAME)
        return self.br_proc

    def stop_br(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the BR by its PID; returns its exit status."""
        proc, self.br_proc = self.br_proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def counters(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "br-counters.json").read_text())

    def wait_counters(self, pred: Any, timeout: float = 3.0) -> dict[str, Any]:
        """Counters once ``pred(counters)`` holds (they are rewritten every 0.5 s)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.counters()
            if pred(c) or time.monotonic() > deadline:
                return c
            time.sleep(0.1)

    def flows(self) -> list[dict[str, Any]]:
        p = self.state_dir / "br-flows.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []

    # -- teardown --------------------------------------------------------------------------------------

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_br()
        for ns in reversed(self.namespaces):
            _delete_ns(ns)
        self.namespaces.clear()
        if not os.environ.get("MAPELAB_KEEP_BR_STATE"):  # set it to keep br.log, counters and flows
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)


def _atexit() -> None:
    for t in list(_live):
        t.teardown()


atexit.register(_atexit)


def build(scenario_name: str = "cosmote-like", n_ces: int | None = None, wan_mtu: int | None = None) -> BrTopology:
    """Create the namespaces and links (no BR yet).  Caller must call ``teardown()``."""
    stale = sweep_stale()
    if stale:
        print(f"br_fixture: removed leftovers of killed runs: {', '.join(stale)}", file=sys.stderr)
    scenario = load(scenario_name)
    n = n_ces or scenario.ce_count
    prefix = f"mlbr{os.getpid()}-{next(_counter)}-"
    state = Path(tempfile.mkdtemp(prefix=prefix))
    prefixes = scenario.delegated_prefixes(n)
    maps = [scenario.derive(p).map_address for p in prefixes]
    topo = BrTopology(scenario, prefix, state, prefix + "isp", prefix + "inet",
                      [f"{prefix}ce{i + 1}" for i in range(n)], maps)
    _live.append(topo)
    mtu = str(wan_mtu or scenario.wan_mtu)
    try:
        for ns in (topo.isp, topo.inet, *topo.ces):
            run("ip", "netns", "add", ns)
            topo.namespaces.append(ns)
            sysctls = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                       "net.ipv6.conf.default.accept_ra=0"]
            if ns == topo.isp:
                sysctls += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
            run("ip", "netns", "exec", ns, "sysctl", "-qw", *sysctls)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for br in scenario.brs:
            run("ip", "-n", topo.isp, "addr", "add", f"{br}/128", "dev", "lo", "nodad")
        # the internet side
        run("ip", "-n", topo.isp, "link", "add", "inet", "type", "veth", "peer", "name", "eth0", "netns", topo.inet)
        run("ip", "-n", topo.isp, "addr", "add", f"{ISP_INET_ADDR}/24", "dev", "inet")
        run("ip", "-n", topo.inet, "addr", "add", f"{INET_ADDR}/24", "dev", "eth0")
        for ns, dev in ((topo.isp, "inet"), (topo.inet, "eth0")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", topo.inet, "route", "add", "default", "via", str(ISP_INET_ADDR))
        run("ip", "-n", topo.isp, "route", "add", "default", "via", str(INET_ADDR))
        # one WAN link per CE
        for i, (ce, pfx, mapaddr) in enumerate(zip(topo.ces, prefixes, maps, strict=True), start=1):
            dev = f"c{i}"
            run("ip", "-n", topo.isp, "link", "add", dev, "mtu", mtu, "type", "veth", "peer", "name", "wan",
                "mtu", mtu, "netns", ce)
            run("ip", "-n", topo.isp, "addr", "add", f"fd00:0:0:{i:x}::1/64", "dev", dev, "nodad")
            run("ip", "-n", topo.isp, "addr", "add", f"10.0.{i}.1/24", "dev", dev)
            run("ip", "-n", ce, "addr", "add", f"fd00:0:0:{i:x}::2/64", "dev", "wan", "nodad")
            run("ip", "-n", ce, "addr", "add", f"{mapaddr}/128", "dev", "wan", "nodad")
            run("ip", "-n", ce, "addr", "add", f"10.0.{i}.2/24", "dev", "wan")
            run("ip", "-n", topo.isp, "link", "set", dev, "up")
            run("ip", "-n", ce, "link", "set", "wan", "up")
            run("ip", "-n", ce, "-6", "route", "add", "default", "via", f"fd00:0:0:{i:x}::1")
            run("ip", "-n", ce, "route", "add", "default", "via", f"10.0.{i}.1")
            run("ip", "-n", topo.isp, "-6", "route", "add", str(pfx), "via", f"fd00:0:0:{i:x}::2")
    except BaseException:
        topo.teardown()
        raise
    return topo


# -- sockets and packets for the tests ------------------------------------------------------------------


def ce_socket(topo: BrTopology, index: int, timeout: float = 2.0) -> Any:
    """An Ip6Ip4Socket inside CE ``index`` (0-based): the test plays that CE's tunnel end."""
    from mapelab.netio import Ip6Ip4Socket

    with netns(topo.ces[index]):
        s = Ip6Ip4Socket()
    s.settimeout(timeout)
    return s


def socket_in(ns: str, family: int, kind: int, proto: int = 0, timeout: float = 2.0) -> Any:
    import socket

    with netns(ns):
        s = socket.socket(family, kind, proto)
    s.settimeout(timeout)
    return s


def receive(sock: Any, timeout: float = 2.0, want: int = 1, match: Any = None) -> list[Any]:
    """Up to ``want`` packets (``recv()`` results) accepted by ``match`` within ``timeout``."""

    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            item = sock.recv() if hasattr(sock, "recv_raw") else sock.recvfrom(65535)
        except TimeoutError:
            break
        if match is None or match(item):
            got.append(item)
    return got


def drain(sock: Any) -> None:
    """Discard whatever is queued (earlier tests' late packets)."""
    receive(sock, timeout=0.05, want=10_000)
