"""The reference CE on the real testbed: Kea, mapelab's BR and the recording internet of
:mod:`mapelab.testbed.api`, one CE slot, the CE daemon through its driver and the slot's LAN host.

These tests pin the CE's own behaviour (provisioning equals the model, RENEW at T1, withdraw on
option 94 removal, re-apply on renumbering, expiry, port set on the wire, its decapsulation
checks, the faults the e2e suite's tests of tests use).  Each test declares its testbed with
:func:`on_testbed`; the ``bed`` fixture brings it up (the next test's comes up in the background
meanwhile) and tears it down.

Nothing outlives a killed run: every namespace and server process belongs to a testbed run whose
supervisor tears it down when this process dies (it watches our PID), the next ``api.up`` sweeps
a run whose supervisor was killed, and the CE daemons get SIGTERM when pytest dies (the linux
driver starts them with a parent-death signal).

What the CE put on the wire comes from the testbed's capture of the WAN bridge (``pcap=True``:
``<run>/pcap/wan.pcap``): every IPv4-in-IPv6 frame from the CE's WAN MAC with its outer addresses
and inner header, read by :func:`wire`.  The internet's flow records (``tb.flows``) and the BR's
counters (``<br_state_dir>/br-counters.json``) confirm what arrived.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mapelab import scenario as scenarios
from mapelab.ce import CeParams, create
from mapelab.ce.backend_linux import LinuxNetnsCe
from mapelab.ce.driver import CeState
from mapelab.netio.packets import Malformed, parse
from mapelab.testbed import api
from mapelab.testbed.netns import entered
from mapelab.testbed.status import CeSlot
from mapelab.testbed.supervisor import TestbedError

REPO = Path(__file__).resolve().parents[2]


def _missing() -> list[str]:
    """What this machine lacks for these tests (empty: nothing)."""
    if os.geteuid() != 0:
        return []  # the root skip below says it
    missing = api.preflight()
    if not shutil.which("tcpdump"):
        missing.append("tcpdump (apt-get install tcpdump): the evidence of what the CE sends is a capture")
    return missing


MISSING = _missing()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the testbed creates network namespaces"),
    pytest.mark.skipif(bool(MISSING), reason="the testbed needs: " + "; ".join(MISSING)),
]

ALL_SCENARIOS = sorted(p.stem for p in scenarios.SCENARIO_DIR.glob("*.toml"))
T = TypeVar("T")


def sh(*argv: str, check: bool = True) -> str:
    """Run a command; its stdout (a non-zero exit raises with stderr when ``check``)."""
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def nsx(ns: str, *argv: str, check: bool = True) -> str:
    """Run a command in namespace ``ns``."""
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 5.0, step: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(step)


# -- the testbed -------------------------------------------------------------------------------------


@dataclass
class Bed:
    """One testbed run with one CE slot, and the CEs a test started in it."""

    tb: api.Testbed
    scenario: scenarios.Scenario
    slot: CeSlot
    isp: str
    inet_host: str
    ce_dir: Path
    ce_mac: bytes
    marker: socket.socket  # opened in the ISP namespace: see :func:`wire`
    wan_bridge_index: int
    ces: list[LinuxNetnsCe] = field(default_factory=list)

    @property
    def ce_ns(self) -> str:
        assert self.slot.ce_netns is not None
        return self.slot.ce_netns

    @property
    def lan(self) -> str:
        return self.slot.lan_netns

    def start_ce(self, **kw: Any) -> LinuxNetnsCe:
        """The reference CE in the slot, through its driver (torn down by the fixture too)."""
        ce = create("linux", self.slot, state_dir=self.ce_dir, **kw)
        assert isinstance(ce, LinuxNetnsCe)
        self.ces.append(ce)
        ce.start()
        return ce

    def br_counters(self) -> dict[str, Any]:
        path = Path(self.tb.status.extra["br_state_dir"]) / "br-counters.json"
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}


@dataclass(frozen=True)
class BedSpec:
    """The testbed a test runs on: a scenario (None: the test's ``name`` parameter), whether the WAN
    is captured, and DHCPv6 timers that replace the scenario's."""

    scenario: str | None
    pcap: bool = True
    timers: tuple[tuple[str, int], ...] = ()


def on_testbed(scenario: str | None = None, *, pcap: bool = True, **timers: int) -> Callable[[T], T]:
    """Declare the testbed of a test (the ``bed`` fixture reads it; see :func:`bed_pool`)."""

    def mark(fn: T) -> T:
        fn.bed_spec = BedSpec(scenario, pcap, tuple(sorted(timers.items())))  # type: ignore[attr-defined]
        return fn

    return mark


def spec_of(item: pytest.Item) -> BedSpec | None:
    """The testbed ``item`` declared with :func:`on_testbed`, with its scenario filled in."""
    spec: BedSpec | None = getattr(getattr(item, "function", None), "bed_spec", None)
    if spec is None or spec.scenario is not None:
        return spec
    return dataclasses.replace(spec, scenario=item.callspec.params["name"])  # type: ignore[attr-defined]


class BedPool:
    """Brings testbeds up one at a time in a worker thread, so the next test's testbed comes up
    while the current test runs (a bring-up is a quarter of a second; a test is seconds).

    Every testbed it made is torn down by :meth:`close`: told to go down when its test ends
    (:meth:`release`), waited for at the end of the module.  A killed run leaves nothing either:
    each supervisor watches this process, and the next ``api.up`` sweeps what a killed supervisor left.
    """

    def __init__(self, scenario_dir: Path) -> None:
        self.scenario_dir = scenario_dir
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="testbed-up")
        self.ready: dict[BedSpec, Future[api.Testbed]] = {}
        self.made: list[Future[api.Testbed]] = []

    def _up(self, spec: BedSpec) -> api.Testbed:
        assert spec.scenario is not None
        where: str | Path = spec.scenario
        if spec.timers:
            sc = scenarios.load(spec.scenario)
            short = dataclasses.replace(sc, dhcp=dataclasses.replace(sc.dhcp, **dict(spec.timers)))
            where = self.scenario_dir / ("-".join([sc.name, *(f"{k}{v}" for k, v in spec.timers)]) + ".toml")
            where.write_text(scenarios.to_toml(short))
        return api.up(where, ces=1, pcap=spec.pcap, br=True, log=lambda line: print(line, file=sys.stderr))

    def prefetch(self, spec: BedSpec | None) -> None:
        if spec is not None and spec not in self.ready:
            self.ready[spec] = fut = self.worker.submit(self._up, spec)
            self.made.append(fut)

    def take(self, spec: BedSpec) -> api.Testbed:
        self.prefetch(spec)
        return self.ready.pop(spec).result()

    @staticmethod
    def release(tb: api.Testbed) -> None:
        """Ask the testbed to go down without waiting for it (:meth:`close` waits)."""
        try:
            tb.command("down", timeout=5)
        except TestbedError:
            tb.down()  # the supervisor does not answer: stop it (or sweep its run) now

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        for fut in self.made:
            if fut.exception() is None:
                fut.result().down()


@pytest.fixture(scope="module")
def bed_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BedPool]:
    pool = BedPool(tmp_path_factory.mktemp("scenarios"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def bed(request: pytest.FixtureRequest, bed_pool: BedPool, tmp_path: Path) -> Iterator[Bed]:
    """The testbed the test declared with :func:`on_testbed`: one CE slot, the BR, the capture.

    The next test's testbed starts coming up meanwhile.  At the end the CEs started through
    :meth:`Bed.start_ce` are torn down and the testbed is told to go down, whatever happened.
    """
    spec = spec_of(request.node)
    assert spec is not None, "declare the testbed with @on_testbed(...)"
    tb = bed_pool.take(spec)
    items = request.session.items
    at = items.index(request.node)
    if at + 1 < len(items) and items[at + 1].module is request.module:
        bed_pool.prefetch(spec_of(items[at + 1]))
    try:
        st = tb.status
        slot = st.slots[0]
        assert slot.ce_netns is not None
        out = sh("ip", "-n", slot.ce_netns, "-o", "link", "show", "dev", slot.wan_if)
        mac = bytes.fromhex(out.split("link/ether")[1].split()[0].replace(":", ""))
        with entered(st.isp_netns):  # the socket stays in the ISP namespace
            index = socket.if_nametoindex(st.extra["wan_bridge"])
            marker = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except BaseException:
        bed_pool.release(tb)
        raise
    b = Bed(tb, scenarios.load(st.extra["scenario_path"]), slot, st.isp_netns, str(st.inet_addresses[0]),
            tmp_path / "ce", mac, marker, index)
    try:
        yield b
    finally:
        try:
            for ce in b.ces:
                ce.teardown()
        finally:
            marker.close()  # an open socket would keep the namespace alive after it is deleted
            bed_pool.release(tb)


# -- what the CE sent: the testbed's capture of the WAN bridge ---------------------------------------


def _frames(path: Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of every whole record of a pcap file that tcpdump may still be writing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if len(data) < 24:
        return
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frac = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    assert linktype == 1, f"{path}: link type {linktype}, expected Ethernet"
    pos = 24
    while pos + 16 <= len(data):
        sec, sub, incl, _orig = struct.unpack_from(order + "IIII", data, pos)
        if pos + 16 + incl > len(data):
            return  # a record tcpdump has not finished writing
        yield sec + sub * frac, data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl


def _record(ts: float, frame: bytes, ce_mac: bytes) -> dict[str, Any] | None:
    """The IPv4-in-IPv6 packet of one Ethernet frame the CE sent, in the shape of a flow record."""
    if frame[6:12] != ce_mac or frame[12:14] != b"\x86\xdd" or len(frame) < 54:
        return None
    ip6 = frame[14:]
    nh, pos = ip6[6], 40
    while nh in (0, 43, 60) and pos + 8 <= len(ip6):  # hop-by-hop, routing, destination options
        nh, pos = ip6[pos], pos + (ip6[pos + 1] + 1) * 8
    if nh != 4:
        return None
    try:
        h = parse(ip6[pos:], verify_checksum=False)
    except Malformed as e:
        return {"ts": ts, "malformed": str(e)}
    return {
        "ts": ts,
        "outer_src": str(IPv6Address(ip6[8:24])),
        "outer_dst": str(IPv6Address(ip6[24:40])),
        "src": socket.inet_ntoa(h.src),
        "dst": socket.inet_ntoa(h.dst),
        "proto": h.proto,
        "sport": h.sport,  # the ICMP echo identifier for pings; None for a fragment after the first
        "icmp_type": h.icmp_type,
        "len": h.total,
    }


def wire(bed: Bed, since: float = 0.0) -> list[dict[str, Any]]:
    """Every IPv4-in-IPv6 packet the CE sent on its WAN since ``since`` (time.time()) until now.

    "Until now" is exact: the ISP sends a marker datagram onto the WAN bridge, and the capture is
    read once the marker is in it — tcpdump writes in capture order, so everything the CE sent
    before is there too.
    """
    pcap = bed.tb.run_dir / "pcap" / "wan.pcap"
    token = os.urandom(16)
    bed.marker.sendto(b"mapelab-wire-marker " + token, ("ff02::1", 9, 0, bed.wan_bridge_index))
    deadline = time.monotonic() + 5
    while True:
        frames = list(_frames(pcap))
        end = next((i for i, (_ts, f) in enumerate(frames) if token in f), None)
        if end is not None:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the capture {pcap} did not show a marker sent 5 s ago: is tcpdump running?")
        time.sleep(0.01)
    recs = (_record(ts, f, bed.ce_mac) for ts, f in frames[:end] if ts >= since)
    return [r for r in recs if r is not None]


# -- traffic from the LAN host (one datagram per flow, no retries: a lost first packet must show) ---


def lan_udp(bed: Bed, count: int, port: int = 7, timeout: float = 2.0) -> int:
    """Send ``count`` UDP datagrams from distinct sockets on the LAN host; return how many got an echo."""
    code = (
        "import socket,sys\n"
        "import select,time\n"
        f"socks=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range({count})]\n"
        f"for s in socks:\n s.setblocking(False)\n s.sendto(b'x'*32,('{bed.inet_host}',{port}))\n"
        f"got=set(); end=time.monotonic()+{timeout}\n"
        "while len(got)<len(socks) and time.monotonic()<end:\n"
        " r,_,_=select.select([s for s in socks if s not in got],[],[],max(0,end-time.monotonic()))\n"
        " for s in r:\n  s.recv(100); got.add(s)\n"
        "print(len(got))\n"
    )
    return int(nsx(bed.lan, sys.executable, "-c", code).strip())


def lan_ping(bed: Bed, count: int, timeout: float = 2.0) -> int:
    """ICMP echo from the LAN host with raw sockets (no ping binary needed); returns replies seen."""
    code = (
        "import socket,struct,time,select\n"
        "def ck(b):\n"
        " b=b+b'\\0'*(len(b)%2); s=sum(struct.unpack('!%dH'%(len(b)//2),b))\n"
        " while s>>16: s=(s&0xffff)+(s>>16)\n"
        " return ~s&0xffff\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
        "got=0\n"
        f"for seq in range({count}):\n"
        " m=struct.pack('!BBHHH',8,0,0,0x1234,seq)+b'mapelab'\n"
        " m=m[:2]+struct.pack('!H',ck(m))+m[4:]\n"
        f" s.sendto(m,('{bed.inet_host}',0)); end=time.monotonic()+{timeout}\n"
        " while time.monotonic()<end:\n"
        "  r,_,_=select.select([s],[],[],max(0,end-time.monotonic()))\n"
        "  if not r: break\n"
        "  d=s.recv(2000); h=(d[0]&15)*4\n"
        "  if d[h]==0 and struct.unpack('!HH',d[h+4:h+8])==(0x1234,seq): got+=1; break\n"
        "print(got)\n"
    )
    return int(nsx(bed.lan, sys.executable, "-c", code).strip())


def lan_stream(bed: Bed, seconds: float, interval: float = 0.05) -> subprocess.Popen[str]:
    """A long-running UDP echo flow from one LAN socket: prints ``sent received`` at the end."""
    code = (
        "import socket,time,select\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setblocking(False)\n"
        f"end=time.monotonic()+{seconds}; sent=got=0\n"
        "while time.monotonic()<end:\n"
        f" s.sendto(b'stream',('{bed.inet_host}',7)); sent+=1\n"
        f" t=time.monotonic()+{interval}\n"
        " while True:\n"
        "  r,_,_=select.select([s],[],[],max(0,t-time.monotonic()))\n"
        "  if not r: break\n"
        "  s.recv(100); got+=1\n"
        "print(sent, got)\n"
    )
    return subprocess.Popen(["ip", "netns", "exec", bed.lan, sys.executable, "-c", code], stdout=subprocess.PIPE,
                            text=True)


# -- tests ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nft_netns() -> Iterator[str]:
    """A namespace to load rulesets into: the CE namespace of a testbed where no CE runs."""
    tb = api.up("cosmote-like", ces=1, br=False, log=lambda line: print(line, file=sys.stderr))
    try:
        ns = tb.status.slots[0].ce_netns
        assert ns is not None
        yield ns
    finally:
        tb.down()


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_every_scenario_ruleset_loads_in_nft(nft_netns: str, name: str) -> None:
    """The rendered table is accepted by the real nft (syntax and kernel), for every scenario."""
    from mapelab.ce.daemon.nat import NatPlan, render

    try:
        text = render(scenarios.load(name).derive(), NatPlan("mape0", 1452))
        p = subprocess.run(["ip", "netns", "exec", nft_netns, "nft", "-f", "-"], input=text, capture_output=True,
                           text=True, check=False)
        assert p.returncode == 0, p.stderr
        listed = nsx(nft_netns, "nft", "-j", "list", "table", "ip", "mapece")
        assert "psmap" in listed or not scenarios.load(name).derive().port_set.restricted
    finally:
        nsx(nft_netns, "nft", "flush", "ruleset", check=False)


@pytest.mark.parametrize("name", ALL_SCENARIOS)
@on_testbed()
def test_provisioning_equals_model_and_traffic_stays_in_port_set(bed: Bed, name: str) -> None:
    ce = bed.start_ce()
    try:
        t0 = time.monotonic()
        got = ce.wait_provisioned(20)
        took = time.monotonic() - t0
        model = bed.scenario.derive(bed.scenario.first_prefix())
        assert got == CeParams.from_mape(model), got.differences(model)
        assert took < 6, f"provisioning took {took:.1f}s"
        st = ce.state()
        assert st.tunnel.mtu == bed.scenario.wan_mtu - 40
        assert st.tunnel.mss == bed.scenario.wan_mtu - 80
        restricted = model.port_set.restricted
        assert st.nat.port_ranges == (tuple(model.port_set.ranges()) if restricted else None)
        addrs = json.dumps(st.live["addresses"])
        assert str(model.map_address) in addrs and str(model.ipv4) in addrs
        bed.tb.wait_delegated(str(got.delegated_prefix))  # the ISP routes the prefix (the BR can answer)
        # Traffic: UDP flows and pings from the LAN come back, and every port on the wire is ours.
        flows = min(40, len(model.port_set))
        assert lan_udp(bed, flows) == flows
        assert lan_ping(bed, 3) == 3
        seen = [r for r in wire(bed) if "sport" in r]
        assert seen, "the capture of the WAN shows nothing the CE sent"
        assert {r["outer_src"] for r in seen} == {str(model.map_address)}
        assert {r["outer_dst"] for r in seen} == {str(model.br)}
        assert {r["src"] for r in seen} == {str(model.ipv4)}
        outside = [r["sport"] for r in seen if r["sport"] not in model.port_set]
        assert not outside, f"ports outside the set {model.port_set.describe()}: {outside}"
        assert any(r["proto"] == 1 for r in seen) and any(r["proto"] == 17 for r in seen)
        # ... and what reached the internet through the BR: our address, our ports and echo ids.
        arrived = bed.tb.flows(proto="udp") + bed.tb.flows(proto="icmp")
        assert len([f for f in arrived if f["proto"] == "udp"]) >= flows, arrived
        assert {f["src"] for f in arrived} == {str(model.ipv4)}
        assert all(f["sport"] in model.port_set for f in arrived), arrived
        counters = ce.state().counters
        assert counters.get("tx-drop-outside-set", 0) == 0
    finally:
        ce.teardown()
    st = json.loads((bed.ce_dir / "state.json").read_text())
    assert st["status"] == "stopped" and st["params"] is None
    assert st["counters"].get("dhcp-sent-RELEASE") == 1
    assert "mape0" not in sh("ip", "-n", bed.ce_ns, "link")
    assert "mapece" not in nsx(bed.ce_ns, "nft", "list", "tables")


@on_testbed("k12-small-set")
def test_exhaustion_refuses_excess_and_never_leaks(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        model = CeParams.from_mape(bed.scenario.derive())
        got = ce.wait_provisioned(20)
        bed.tb.wait_delegated(str(got.delegated_prefix))
        # Short UDP conntrack timeouts in the CE's namespace, so "old flows end" takes seconds.
        nsx(bed.ce_ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=2",
            "net.netfilter.nf_conntrack_udp_timeout_stream=2")
        size = len(model.port_set)
        answered = lan_udp(bed, size + 10, timeout=1.5)  # returns 1.5 s after sending: 10 never get an echo
        assert answered == size, "every port of the set is usable, and no more"
        seen = [r for r in wire(bed) if r.get("proto") == 17]
        assert all(r["sport"] in model.port_set for r in seen)
        assert len({r["sport"] for r in seen}) == size
        st = ce.state()
        assert st.counters.get("tx-drop-outside-set", 0) == 0
        time.sleep(1.0)  # 2.5 s after the old flows' last packets: their conntrack entries (2 s) expired
        assert lan_udp(bed, size) == size, "new flows work again once the old ones ended"
    finally:
        ce.teardown()


@on_testbed("cosmote-like", t1=3, t2=5, preferred=8, valid=10)
def test_renew_at_t1_unchanged_then_withdraw_and_renumber(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        first = ce.wait_provisioned(20)
        st = ce.state()
        gen, seen_events = st.generation, len(st.events)

        def renewed() -> CeState | None:
            now = ce.state()
            return now if now.counters.get("dhcp-sent-RENEW") and len(now.events) > seen_events else None

        st = wait_for("a RENEW at T1 = 3 s and the event of its REPLY", renewed, 4.5)
        assert st.counters.get("dhcp-sent-RENEW", 0) >= 1, st.counters
        assert st.generation == gen, "an unchanged renewal must not re-apply"
        assert any(e["kind"] == "unchanged" for e in st.events)
        # Option 94 withdrawn by the server → IPv4 torn down at the next renewal.
        bed.tb.withdraw()
        ce.renew()
        ce.wait_withdrawn(10)
        st = ce.state()
        assert st.params is None and "mape0" not in json.dumps(st.live["addresses"])
        assert "default" not in json.dumps(st.live["routes4"])
        # Back, then renumbered: a new pool gives a new prefix, hence new IPv4/PSID/MAP address.
        bed.tb.restore()
        ce.renew()
        again = ce.wait_provisioned(10)
        assert again == first
        new_pool = IPv6Network(bed.tb.renumber())
        ce.renew()
        t0 = time.monotonic()
        changed = ce.wait_provisioned(15, different_from=first)
        model = bed.scenario.derive(changed.delegated_prefix)
        assert changed == CeParams.from_mape(model)
        assert changed.delegated_prefix.subnet_of(new_pool)
        assert changed.map_address != first.map_address
        bed.tb.wait_delegated(str(changed.delegated_prefix))
        mark = time.time()
        assert lan_udp(bed, 20) == 20, f"no connectivity {time.monotonic() - t0:.1f}s after renumbering"
        after = [r for r in wire(bed, since=mark) if "sport" in r]
        assert after and all(r["outer_src"] == str(changed.map_address) for r in after)
        assert all(r["sport"] in changed.port_set for r in after)
    finally:
        ce.teardown()


@on_testbed("cosmote-like")
def test_long_flow_survives_unchanged_renewal_and_moves_to_new_ports_on_renumbering(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        first = ce.wait_provisioned(20)
        bed.tb.wait_delegated(str(first.delegated_prefix))
        flow = lan_stream(bed, 2.0)
        time.sleep(0.5)
        ce.renew()
        out, _ = flow.communicate(timeout=10)
        sent, got = map(int, out.split())
        assert got == sent, f"an unchanged renewal interrupted the flow: {got}/{sent} echoes"
        # Renumber while a flow runs: afterwards nothing may carry the old address or ports.
        flow = lan_stream(bed, 3.0)
        time.sleep(0.5)
        bed.tb.renumber()
        ce.renew()
        new = ce.wait_provisioned(10, different_from=first)
        mark = time.time()
        out, _ = flow.communicate(timeout=10)
        sent, got = map(int, out.split())
        after = [r for r in wire(bed, since=mark) if r.get("proto") == 17]
        assert after, "the flow did not continue after renumbering"
        assert {r["outer_src"] for r in after} == {str(new.map_address)}
        assert {r["src"] for r in after} == {str(new.ipv4)}
        assert all(r["sport"] in new.port_set for r in after), [r["sport"] for r in after]
        assert got >= sent // 2, f"the flow did not recover after renumbering: {got}/{sent}"
    finally:
        ce.teardown()


@on_testbed("cosmote-like", pcap=False, t1=2, t2=3, preferred=4, valid=5)
def test_lease_expiry_withdraws(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        ce.wait_provisioned(20)
        bed.tb.silence()  # the server goes silent: RENEW, REBIND, then expiry
        try:
            ce.wait_withdrawn(12)
            st = ce.state()
            assert any(e["kind"] == "expired" for e in st.events)
            assert st.counters.get("dhcp-sent-REBIND", 0) >= 1
        finally:
            bed.tb.use_kea()
        ce.wait_provisioned(20)  # and it comes back once the server answers
    finally:
        ce.teardown()


@on_testbed("rfc7597-example1", pcap=False)
def test_restart_keeps_prefix(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        first = ce.wait_provisioned(20)
        ce.restart(graceful=False)
        assert ce.wait_provisioned(20) == first
        ce.restart()
        assert ce.wait_provisioned(20) == first
    finally:
        ce.teardown()


def inject(bed: Bed, *packets: tuple[IPv6Address, IPv6Address, str, str, int, int]) -> None:
    """Send encapsulated UDP packets ``(outer src, outer dst, inner src, inner dst, sport, dport)``
    from the ISP namespace (``python -m mapelab.testbed.inject``), as a BR or a spoofer would."""
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", bed.isp, sys.executable, "-m", "mapelab.testbed.inject", "--src", str(osrc),
             "--dst", str(odst), "--inner-src", isrc, "--inner-dst", idst, "--sport", str(sport),
             "--dport", str(dport)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
        )
        for osrc, odst, isrc, idst, sport, dport in packets
    ]
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, f"inject failed: {out} {err}"


@on_testbed("cosmote-like", pcap=False)
def test_decapsulation_checks_spoofing_and_port_set(bed: Bed) -> None:
    """RFC 7597 §8: anti-spoofing for non-BR sources (the BR is exempt), and only our address and
    port set get in; every drop is counted under its reason."""
    ce = bed.start_ce()
    try:
        p = ce.wait_provisioned(20)
        bed.tb.wait_delegated(str(p.delegated_prefix))
        spoofer = IPv6Address(bed.tb.status.extra["isp_wan_address"])  # the ISP's own: under no rule, not a BR
        mine = p.port_set.ranges()[0][0]
        outside = mine - 1
        assert outside not in p.port_set
        br = p.br
        assert br is not None and spoofer != br
        inject(
            bed,
            (spoofer, p.map_address, "203.0.113.9", str(p.ipv4), 53, mine),  # not under any rule
            (br, p.map_address, "203.0.113.9", str(p.ipv4), 53, outside),  # BR, port not ours
            (br, p.map_address, "203.0.113.9", "198.51.100.99", 53, mine),  # BR, address not ours
            (br, p.map_address, "203.0.113.9", str(p.ipv4), 53, mine),  # fine: reaches the kernel
        )
        keys = ("rx-drop-spoof-no-rule", "rx-drop-port-outside-set", "rx-drop-not-our-address", "rx-packets")

        def counted() -> dict[str, int] | None:
            c = dict(ce.state().counters)
            return c if all(c.get(k) for k in keys) else None

        # state.json gets the counters at most once a second; all four keys counted = all four packets seen
        c = wait_for("the CE counting all four packets", counted, 3.0)
        assert c.get("rx-drop-spoof-no-rule") == 1, c
        assert c.get("rx-drop-port-outside-set") == 1, c
        assert c.get("rx-drop-not-our-address") == 1, c
        assert c.get("rx-packets") == 1, c
    finally:
        ce.teardown()


@on_testbed("k12-small-set")
def test_fault_nat_whole_range_is_visible_on_the_wire(bed: Bed) -> None:
    """The fault the e2e suite's tests of tests rely on really leaks ports outside the set."""
    ce = bed.start_ce(faults=("nat-whole-range",))
    try:
        p = ce.wait_provisioned(20)
        bed.tb.wait_delegated(str(p.delegated_prefix))
        lan_udp(bed, 30, timeout=0.5)  # the BR drops what leaves outside the set: no echo to wait for
        seen = [r["sport"] for r in wire(bed) if r.get("proto") == 17]
        assert any(s not in p.port_set for s in seen), seen
        # ... and the real BR says so too (RFC 7597 §8.1).
        wait_for("the BR counting port-outside-set drops",
                 lambda: bed.br_counters().get("drops", {}).get("port-outside-set"), 3.0)
    finally:
        ce.teardown()


@on_testbed("cosmote-like", pcap=False)
def test_fault_ignore_renumbering_keeps_old_parameters(bed: Bed) -> None:
    ce = bed.start_ce(faults=("ignore-renumbering",))
    try:
        first = ce.wait_provisioned(20)
        new_pool = IPv6Network(bed.tb.renumber())
        ce.renew()
        def lease_prefix() -> IPv6Network:
            lease = ce.state().lease
            return lease.prefix if lease and lease.prefix else IPv6Network("::/0")

        wait_for("the lease moving to the new pool", lambda: lease_prefix().subnet_of(new_pool), 5.0)
        time.sleep(0.5)  # what a working CE would re-apply by now
        st = ce.state()
        assert st.lease is not None and st.lease.prefix is not None and st.lease.prefix.subnet_of(new_pool)
        assert st.params == first
    finally:
        ce.teardown()


@on_testbed("cosmote-like")
def test_br_change_reapplies_toward_the_new_br(bed: Bed) -> None:
    ce = bed.start_ce()
    try:
        first = ce.wait_provisioned(20)
        new_br = IPv6Address("2001:db8:ffff::2")
        assert bed.tb.change_br(str(new_br)) == [str(new_br)]
        ce.renew()
        got = ce.wait_provisioned(10, different_from=first)
        assert got.br == new_br and got.map_address == first.map_address
        bed.tb.wait_delegated(str(got.delegated_prefix))
        mark = time.time()
        assert lan_udp(bed, 5) == 5
        after = wire(bed, since=mark)
        assert after and {r["outer_dst"] for r in after} == {str(new_br)}
    finally:
        ce.teardown()


@on_testbed("cosmote-like")
def test_tunnel_mtu_fragments_big_datagrams_and_refuses_df(bed: Bed) -> None:
    """Tunnel MTU = WAN MTU − 40 (1452 on cosmote-like's PPPoE-sized WAN): a 3000-byte UDP datagram
    leaves in IPv4 fragments that fit (RFC 2473 §7.2's fragment-before-encapsulating shape), and a
    DF packet larger than the tunnel MTU is refused with the tunnel MTU reported back."""
    ce = bed.start_ce()
    try:
        p = ce.wait_provisioned(20)
        bed.tb.wait_delegated(str(p.delegated_prefix))
        mark = time.time()
        code = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, 10, 0)\n"  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
            f"s.sendto(b'x'*3000,('{bed.inet_host}',7))\n"
            "d=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "d.setsockopt(socket.IPPROTO_IP, 10, 2)\n"  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
            f"d.connect(('{bed.inet_host}',7))\n"
            "import time\n"
            "for _ in range(3):\n"
            " try: d.send(b'y'*1472)\n"
            " except OSError as e: print('refused', e.errno, d.getsockopt(socket.IPPROTO_IP, 14)); break\n"
            " time.sleep(0.3)\n"
            "else: print('sent')\n"
        )
        out = nsx(bed.lan, sys.executable, "-c", code).split()
        assert out[:2] == ["refused", "90"] and out[2] == "1452", out  # EMSGSIZE, path MTU learnt
        frags = [r for r in wire(bed, since=mark) if r.get("proto") == 17 and r["src"] == str(p.ipv4)]
        assert len(frags) >= 3 and max(r["len"] for r in frags) <= 1452, frags
        assert sum(r["len"] - 20 for r in frags) == 3000 + 8
    finally:
        ce.teardown()
