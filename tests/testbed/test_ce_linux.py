"""The reference CE on its own, in namespaces this file creates: real Kea, the CE daemon through its
driver, a LAN host, and a stand-in BR (``ce_minibr.py``) that records what the CE sends.

Why not the full testbed: these tests pin the CE's own behaviour (provisioning equals the model,
RENEW at T1, withdraw on option 94 removal, re-apply on renumbering, port set on the wire) with
the fewest moving parts, so a failure here is the CE's.  Every namespace starts with
``mlce<pid>-`` and is removed at the end, with every process started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from mapelab import scenario as scenarios
from mapelab.ce import CeParams, create
from mapelab.ce.backend_linux import LinuxNetnsCe
from mapelab.testbed.kea import KeaServer, LeasePlan, replace_plan
from mapelab.testbed.status import CeSlot

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
    pytest.mark.skipif(not Path("/usr/sbin/kea-dhcp6").exists(),
                       reason="needs /usr/sbin/kea-dhcp6 (apt-get install kea-dhcp6-server)"),
]

PREFIX = f"mlce{os.getpid()}-"
HERE = Path(__file__).resolve().parent
WAN_SUBNET = IPv6Network("2001:db8:1::/64")
INET_HOST = "203.0.113.7"
ISP_LL = "fe80::1"


def sh(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def nsx(ns: str, *argv: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


@dataclass
class Bed:
    isp: str
    ce_ns: str
    lan: str
    slot: CeSlot
    kea: KeaServer
    plan: LeasePlan
    scenario: scenarios.Scenario
    run_dir: Path
    br_log: Path
    br_proc: subprocess.Popen[bytes]

    def br_records(self) -> list[dict[str, object]]:
        if not self.br_log.exists():
            return []
        return [json.loads(x) for x in self.br_log.read_text().splitlines() if x.strip()]


def _counter() -> Iterator[int]:
    i = 0
    while True:
        i += 1
        yield i


_seq = _counter()


@pytest.fixture
def make_bed(tmp_path: Path) -> Iterator[object]:
    """Build a bed for a scenario; everything is removed at the end, whatever happened."""
    created: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    keas: list[KeaServer] = []

    def build(name: str, **timers: int) -> Bed:
        sc = scenarios.load(name)
        if timers:
            from dataclasses import replace

            sc = replace(sc, dhcp=replace(sc.dhcp, **timers))
        n = next(_seq)
        isp, ce_ns, lan = (f"{PREFIX}{n}{x}" for x in ("isp", "ce", "lan"))
        for ns in (isp, ce_ns, lan):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            nsx(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ce_ns, "link", "add", "wan0", "mtu", str(sc.wan_mtu), "type", "veth", "peer", "name", "isp0",
           "mtu", str(sc.wan_mtu), "netns", isp)
        sh("ip", "-n", ce_ns, "link", "add", "lan0", "type", "veth", "peer", "name", "host0", "netns", lan)
        sh("ip", "-n", isp, "link", "set", "isp0", "up")
        sh("ip", "-n", isp, "-6", "addr", "add", f"{ISP_LL}/64", "dev", "isp0")
        sh("ip", "-n", ce_ns, "link", "set", "wan0", "up")  # Kea needs a running isp0 (carrier)
        sh("ip", "-n", isp, "-6", "addr", "add", "2001:db8:1::1/64", "dev", "isp0", "nodad")
        sh("ip", "-n", isp, "-6", "addr", "add", f"{sc.br}/128", "dev", "lo")
        nsx(isp, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "-n", lan, "link", "set", "host0", "up")
        sh("ip", "-n", lan, "addr", "add", "192.168.1.2/24", "dev", "host0")
        sh("ip", "-n", lan, "route", "add", "default", "via", "192.168.1.1")
        run_dir = tmp_path / f"bed{n}"
        run_dir.mkdir()
        kea = KeaServer(isp, run_dir, "isp0", WAN_SUBNET)
        plan = LeasePlan.of(sc)
        kea.start(plan)
        keas.append(kea)
        br_log = run_dir / "br.jsonl"
        br = subprocess.Popen(
            ["ip", "netns", "exec", isp, sys.executable, str(HERE / "ce_minibr.py"), "--log", str(br_log)],
            stdout=subprocess.DEVNULL, stderr=(run_dir / "br.err").open("wb"),
        )
        procs.append(br)
        slot = CeSlot(
            index=0, kind="netns", ce_netns=ce_ns, wan_if="wan0", lan_if="lan0", wan_tap=None, lan_tap=None,
            lan_netns=lan, lan_prefix=IPv4Network("192.168.1.0/24"), lan_host=IPv4Address("192.168.1.2"),
            lan_gateway=IPv4Address("192.168.1.1"), wan_mtu=sc.wan_mtu,
        )
        return Bed(isp, ce_ns, lan, slot, kea, plan, sc, run_dir, br_log, br)

    yield build
    for kea in keas:
        if kea.proc is not None and kea.proc.poll() is None:
            kea.proc.send_signal(signal.SIGTERM)
            try:
                kea.proc.wait(5)
            except subprocess.TimeoutExpired:
                kea.proc.kill()
                kea.proc.wait()
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for ns in created:
        sh("ip", "netns", "del", ns, check=False)


def route_pool(bed: Bed) -> None:
    """The ISP routes the delegated pool to the CE's link-local (Kea installs no routes)."""
    out = sh("ip", "-n", bed.ce_ns, "-6", "-o", "addr", "show", "dev", "wan0", "scope", "link")
    ll = out.split()[3].split("/")[0]
    sh("ip", "-n", bed.isp, "-6", "route", "replace", str(bed.plan.pd_pool), "via", ll, "dev", "isp0")
    # What the testbed's router advertisements give a CE: a default route toward the ISP.
    sh("ip", "-n", bed.ce_ns, "-6", "route", "replace", "default", "via", ISP_LL, "dev", "wan0")


def start_ce(bed: Bed, **kw: object) -> LinuxNetnsCe:
    ce = create("linux", bed.slot, state_dir=bed.run_dir / "ce", **kw)
    assert isinstance(ce, LinuxNetnsCe)
    ce.start()
    return ce


def lan_udp(bed: Bed, count: int, port: int = 7, timeout: float = 2.0) -> int:
    """Send ``count`` UDP datagrams from distinct sockets on the LAN host; return how many got an echo."""
    code = (
        "import socket,sys\n"
        "import select,time\n"
        f"socks=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range({count})]\n"
        f"for s in socks:\n s.setblocking(False)\n s.sendto(b'x'*32,('{INET_HOST}',{port}))\n"
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
        "from array import array\n"
        "def ck(b):\n"
        " b=b+b'\\0'*(len(b)%2); s=sum(struct.unpack('!%dH'%(len(b)//2),b))\n"
        " while s>>16: s=(s&0xffff)+(s>>16)\n"
        " return ~s&0xffff\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
        "got=0\n"
        f"for seq in range({count}):\n"
        " m=struct.pack('!BBHHH',8,0,0,0x1234,seq)+b'mapelab'\n"
        " m=m[:2]+struct.pack('!H',ck(m))+m[4:]\n"
        f" s.sendto(m,('{INET_HOST}',0)); end=time.monotonic()+{timeout}\n"
        " while time.monotonic()<end:\n"
        "  r,_,_=select.select([s],[],[],max(0,end-time.monotonic()))\n"
        "  if not r: break\n"
        "  d=s.recv(2000); h=(d[0]&15)*4\n"
        "  if d[h]==0 and struct.unpack('!HH',d[h+4:h+8])==(0x1234,seq): got+=1; break\n"
        "print(got)\n"
    )
    return int(nsx(bed.lan, sys.executable, "-c", code).strip())


ALL_SCENARIOS = sorted(p.stem for p in scenarios.SCENARIO_DIR.glob("*.toml"))


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_every_scenario_ruleset_loads_in_nft(name: str, tmp_path: Path) -> None:
    """The rendered table is accepted by the real nft (syntax and kernel), for every scenario."""
    from mapelab.ce.nat import NatPlan, render

    ns = f"{PREFIX}nft{next(_seq)}"
    sh("ip", "netns", "add", ns)
    try:
        text = render(scenarios.load(name).derive(), NatPlan("mape0", 1452))
        p = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, capture_output=True,
                           text=True, check=False)
        assert p.returncode == 0, p.stderr
        listed = nsx(ns, "nft", "-j", "list", "table", "ip", "mapece")
        assert "psmap" in listed or not scenarios.load(name).derive().port_set.restricted
    finally:
        sh("ip", "netns", "del", ns, check=False)


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_provisioning_equals_model_and_traffic_stays_in_port_set(make_bed, name: str) -> None:
    bed: Bed = make_bed(name)
    ce = start_ce(bed)
    try:
        route_pool(bed)
        t0 = time.monotonic()
        got = ce.wait_provisioned(20)
        took = time.monotonic() - t0
        model = bed.scenario.derive(bed.scenario.first_prefix())
        assert got == CeParams.from_mape(model), got.differences(model)
        assert took < 6, f"provisioning took {took:.1f}s"
        st = ce.state()
        assert st["tunnel"]["mtu"] == bed.scenario.wan_mtu - 40
        assert st["tunnel"]["mss"] == bed.scenario.wan_mtu - 80
        restricted = model.port_set.restricted
        assert len(st["nat_rules"]["psmap"]) == (len(model.port_set.ranges()) if restricted else 0)
        addrs = json.dumps(st["live"]["addresses"])
        assert str(model.map_address) in addrs and str(model.ipv4) in addrs
        # Traffic: UDP flows and pings from the LAN come back, and every port the "internet" saw is ours.
        flows = min(40, len(model.port_set))
        assert lan_udp(bed, flows) == flows
        assert lan_ping(bed, 3) == 3
        seen = [r for r in bed.br_records() if "sport" in r]
        assert seen, "the stand-in BR saw nothing"
        assert {r["outer_src"] for r in seen} == {str(model.map_address)}
        assert {r["outer_dst"] for r in seen} == {str(model.br)}
        assert {r["src"] for r in seen} == {str(model.ipv4)}
        outside = [r["sport"] for r in seen if r["sport"] not in model.port_set]
        assert not outside, f"ports outside the set {model.port_set.describe()}: {outside}"
        assert any(r["proto"] == 1 for r in seen) and any(r["proto"] == 17 for r in seen)
        counters = ce.state()["counters"]
        assert counters.get("tx-drop-outside-set", 0) == 0
    finally:
        ce.teardown()
    st = json.loads((bed.run_dir / "ce" / "state.json").read_text())
    assert st["status"] == "stopped" and st["params"] is None
    assert st["counters"].get("dhcp-sent-RELEASE") == 1
    assert "mape0" not in sh("ip", "-n", bed.ce_ns, "link")
    assert "mapece" not in nsx(bed.ce_ns, "nft", "list", "tables")


def test_exhaustion_refuses_excess_and_never_leaks(make_bed) -> None:
    bed: Bed = make_bed("k12-small-set")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        model = CeParams.from_mape(bed.scenario.derive())
        ce.wait_provisioned(20)
        # Short UDP conntrack timeouts in the CE's namespace, so "old flows end" takes seconds.
        nsx(bed.ce_ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=2",
            "net.netfilter.nf_conntrack_udp_timeout_stream=2")
        size = len(model.port_set)
        answered = lan_udp(bed, size + 10, timeout=1.5)
        assert answered == size, "every port of the set is usable, and no more"
        seen = [r for r in bed.br_records() if r.get("proto") == 17]
        assert all(r["sport"] in model.port_set for r in seen)
        assert len({r["sport"] for r in seen}) == size
        st = ce.state()
        assert st["counters"].get("tx-drop-outside-set", 0) == 0
        time.sleep(3)  # the old flows' conntrack entries expire
        assert lan_udp(bed, size) == size, "new flows work again once the old ones ended"
    finally:
        ce.teardown()


def test_renew_at_t1_unchanged_then_withdraw_and_renumber(make_bed) -> None:
    bed: Bed = make_bed("cosmote-like", t1=3, t2=5, preferred=8, valid=10)
    ce = start_ce(bed)
    try:
        route_pool(bed)
        first = ce.wait_provisioned(20)
        gen = ce.state()["generation"]
        time.sleep(4.5)  # past T1 = 3
        st = ce.state()
        assert st["counters"].get("dhcp-sent-RENEW", 0) >= 1, st["counters"]
        assert st["generation"] == gen, "an unchanged renewal must not re-apply"
        assert any(e["kind"] == "unchanged" for e in st["events"])
        # Option 94 withdrawn by the server → IPv4 torn down at the next renewal.
        bed.plan = replace_plan(bed.plan, send_mape=False)
        bed.kea.reload(bed.plan)
        ce.renew()
        ce.wait_withdrawn(10)
        st = ce.state()
        assert st["params"] is None and "mape0" not in json.dumps(st["live"]["addresses"])
        assert "default" not in json.dumps(st["live"]["routes4"])
        # Back, then renumbered: a new pool gives a new prefix, hence new IPv4/PSID/MAP address.
        bed.plan = replace_plan(bed.plan, send_mape=True)
        bed.kea.reload(bed.plan)
        ce.renew()
        again = ce.wait_provisioned(10)
        assert again == first
        new_pool = IPv6Network("2001:db8:6200:4400::/55")
        bed.plan = replace_plan(bed.plan, pd_pool=new_pool)
        bed.kea.reload(bed.plan)
        sh("ip", "-n", bed.isp, "-6", "route", "replace", str(new_pool), "via",
           sh("ip", "-n", bed.ce_ns, "-6", "-o", "addr", "show", "dev", "wan0", "scope", "link").split()[3]
           .split("/")[0], "dev", "isp0")
        ce.renew()
        t0 = time.monotonic()
        changed = ce.wait_provisioned(15, different_from=first)
        model = bed.scenario.derive(changed.delegated_prefix)
        assert changed == CeParams.from_mape(model)
        assert changed.delegated_prefix.subnet_of(new_pool)
        assert changed.map_address != first.map_address
        mark = len(bed.br_records())
        assert lan_udp(bed, 20) == 20, f"no connectivity {time.monotonic() - t0:.1f}s after renumbering"
        after = [r for r in bed.br_records()[mark:] if "sport" in r]
        assert after and all(r["outer_src"] == str(changed.map_address) for r in after)
        assert all(r["sport"] in changed.port_set for r in after)
    finally:
        ce.teardown()


def lan_stream(bed: Bed, seconds: float, interval: float = 0.05) -> subprocess.Popen[str]:
    """A long-running UDP flow from one LAN socket: prints ``sent received`` at the end."""
    code = (
        "import socket,time,select\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setblocking(False)\n"
        f"end=time.monotonic()+{seconds}; sent=got=0\n"
        "while time.monotonic()<end:\n"
        f" s.sendto(b'stream',('{INET_HOST}',9)); sent+=1\n"
        f" t=time.monotonic()+{interval}\n"
        " while True:\n"
        "  r,_,_=select.select([s],[],[],max(0,t-time.monotonic()))\n"
        "  if not r: break\n"
        "  s.recv(100); got+=1\n"
        "print(sent, got)\n"
    )
    return subprocess.Popen(["ip", "netns", "exec", bed.lan, sys.executable, "-c", code], stdout=subprocess.PIPE,
                            text=True)


def test_long_flow_survives_unchanged_renewal_and_moves_to_new_ports_on_renumbering(make_bed) -> None:
    bed: Bed = make_bed("cosmote-like")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        first = ce.wait_provisioned(20)
        flow = lan_stream(bed, 2.0)
        time.sleep(0.5)
        ce.renew()
        out, _ = flow.communicate(timeout=10)
        sent, got = map(int, out.split())
        assert got == sent, f"an unchanged renewal interrupted the flow: {got}/{sent} echoes"
        # Renumber while a flow runs: afterwards nothing may carry the old address or ports.
        flow = lan_stream(bed, 3.0)
        time.sleep(0.5)
        new_pool = IPv6Network("2001:db8:6200:4400::/55")
        bed.plan = replace_plan(bed.plan, pd_pool=new_pool)
        bed.kea.reload(bed.plan)
        ll = sh("ip", "-n", bed.ce_ns, "-6", "-o", "addr", "show", "dev", "wan0", "scope", "link").split()[3]
        sh("ip", "-n", bed.isp, "-6", "route", "replace", str(new_pool), "via", ll.split("/")[0], "dev", "isp0")
        ce.renew()
        new = ce.wait_provisioned(10, different_from=first)
        mark = len(bed.br_records())
        out, _ = flow.communicate(timeout=10)
        sent, got = map(int, out.split())
        after = [r for r in bed.br_records()[mark:] if r.get("proto") == 17]
        assert after, "the flow did not continue after renumbering"
        assert {r["outer_src"] for r in after} == {str(new.map_address)}
        assert {r["src"] for r in after} == {str(new.ipv4)}
        assert all(r["sport"] in new.port_set for r in after), [r["sport"] for r in after]
        assert got >= sent // 2, f"the flow did not recover after renumbering: {got}/{sent}"
    finally:
        ce.teardown()


def test_lease_expiry_withdraws(make_bed) -> None:
    bed: Bed = make_bed("cosmote-like", t1=2, t2=3, preferred=4, valid=5)
    ce = start_ce(bed)
    try:
        route_pool(bed)
        ce.wait_provisioned(20)
        bed.kea.proc.send_signal(signal.SIGSTOP)  # the server goes silent: RENEW, REBIND, then expiry
        try:
            ce.wait_withdrawn(12)
            st = ce.state()
            assert any(e["kind"] == "expired" for e in st["events"])
            assert st["counters"].get("dhcp-sent-REBIND", 0) >= 1
        finally:
            bed.kea.proc.send_signal(signal.SIGCONT)
        ce.wait_provisioned(20)  # and it comes back once the server answers
    finally:
        ce.teardown()


def test_restart_keeps_prefix(make_bed) -> None:
    bed: Bed = make_bed("rfc7597-example1")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        first = ce.wait_provisioned(20)
        ce.restart(graceful=False)
        assert ce.wait_provisioned(20) == first
        ce.restart()
        assert ce.wait_provisioned(20) == first
    finally:
        ce.teardown()


def inject(bed: Bed, outer_src: IPv6Address, outer_dst: IPv6Address, inner_src: str, inner_dst: str,
           sport: int, dport: int) -> None:
    """Send one UDP packet encapsulated from the ISP namespace, as a BR or a spoofer would."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE.parents[1])!r})\n"
        "import socket, struct\n"
        "from ipaddress import IPv6Address as A\n"
        "from mapelab.netio import Ip6Ip4Socket\n"
        "from mapelab.netio.packets import build_ipv4\n"
        f"udp = struct.pack('!HHHH', {sport}, {dport}, 12, 0) + b'spam'\n"
        f"pkt = build_ipv4(socket.inet_aton({inner_src!r}), socket.inet_aton({inner_dst!r}), 17, udp)\n"
        f"Ip6Ip4Socket().send(pkt, A({str(outer_src)!r}), A({str(outer_dst)!r}))\n"
    )
    nsx(bed.isp, sys.executable, "-c", code)


def test_decapsulation_checks_spoofing_and_port_set(make_bed) -> None:
    """RFC 7597 §8: anti-spoofing for non-BR sources (the BR is exempt), and only our address and
    port set get in; every drop is counted under its reason."""
    bed: Bed = make_bed("cosmote-like")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        p = ce.wait_provisioned(20)
        spoofer = IPv6Address("2001:db8:1::66")
        sh("ip", "-n", bed.isp, "-6", "addr", "add", f"{spoofer}/128", "dev", "lo")
        mine = p.port_set.ranges()[0][0]
        outside = mine - 1
        assert outside not in p.port_set
        br = p.br
        assert br is not None
        inject(bed, spoofer, p.map_address, "203.0.113.9", str(p.ipv4), 53, mine)  # not under any rule
        inject(bed, br, p.map_address, "203.0.113.9", str(p.ipv4), 53, outside)  # BR, port not ours
        inject(bed, br, p.map_address, "203.0.113.9", "198.51.100.99", 53, mine)  # BR, address not ours
        inject(bed, br, p.map_address, "203.0.113.9", str(p.ipv4), 53, mine)  # fine: reaches the kernel
        time.sleep(1.3)  # counters reach state.json at most once a second
        c = ce.state()["counters"]
        assert c.get("rx-drop-spoof-no-rule") == 1, c
        assert c.get("rx-drop-port-outside-set") == 1, c
        assert c.get("rx-drop-not-our-address") == 1, c
        assert c.get("rx-packets") == 1, c
    finally:
        ce.teardown()


def test_fault_nat_whole_range_is_visible_on_the_wire(make_bed) -> None:
    """The fault the e2e suite's tests of tests rely on really leaks ports outside the set."""
    bed: Bed = make_bed("k12-small-set")
    ce = start_ce(bed, faults=("nat-whole-range",))
    try:
        route_pool(bed)
        p = ce.wait_provisioned(20)
        lan_udp(bed, 30)
        seen = [r["sport"] for r in bed.br_records() if r.get("proto") == 17]
        assert any(s not in p.port_set for s in seen), seen
    finally:
        ce.teardown()


def test_fault_ignore_renumbering_keeps_old_parameters(make_bed) -> None:
    bed: Bed = make_bed("cosmote-like")
    ce = start_ce(bed, faults=("ignore-renumbering",))
    try:
        route_pool(bed)
        first = ce.wait_provisioned(20)
        bed.plan = replace_plan(bed.plan, pd_pool=IPv6Network("2001:db8:6200:4400::/55"))
        bed.kea.reload(bed.plan)
        ce.renew()
        time.sleep(1.5)
        st = ce.state()
        assert st["lease"]["prefix"].startswith("2001:db8:6200:44")
        assert CeParams.from_json(st["params"]) == first
    finally:
        ce.teardown()


def test_br_change_reapplies_toward_the_new_br(make_bed) -> None:
    bed: Bed = make_bed("cosmote-like")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        first = ce.wait_provisioned(20)
        new_br = IPv6Address("2001:db8:ffff::2")
        sh("ip", "-n", bed.isp, "-6", "addr", "add", f"{new_br}/128", "dev", "lo")
        bed.plan = replace_plan(bed.plan, brs=(new_br,))
        bed.kea.reload(bed.plan)
        ce.renew()
        got = ce.wait_provisioned(10, different_from=first)
        assert got.br == new_br and got.map_address == first.map_address
        mark = len(bed.br_records())
        assert lan_udp(bed, 5) == 5
        assert {r["outer_dst"] for r in bed.br_records()[mark:]} == {str(new_br)}
    finally:
        ce.teardown()


def test_tunnel_mtu_fragments_big_datagrams_and_refuses_df(make_bed) -> None:
    """Tunnel MTU = WAN MTU − 40 (1452 on cosmote-like's PPPoE-sized WAN): a 3000-byte UDP datagram
    leaves in IPv4 fragments that fit (RFC 2473 §7.2's fragment-before-encapsulating shape), and a
    DF packet larger than the tunnel MTU is refused with the tunnel MTU reported back."""
    bed: Bed = make_bed("cosmote-like")
    ce = start_ce(bed)
    try:
        route_pool(bed)
        ce.wait_provisioned(20)
        mark = len(bed.br_records())
        code = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, 10, 0)\n"  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
            f"s.sendto(b'x'*3000,('{INET_HOST}',9))\n"
            "d=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "d.setsockopt(socket.IPPROTO_IP, 10, 2)\n"  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
            f"d.connect(('{INET_HOST}',9))\n"
            "import time\n"
            "for _ in range(3):\n"
            " try: d.send(b'y'*1472)\n"
            " except OSError as e: print('refused', e.errno, d.getsockopt(socket.IPPROTO_IP, 14)); break\n"
            " time.sleep(0.3)\n"
            "else: print('sent')\n"
        )
        out = nsx(bed.lan, sys.executable, "-c", code).split()
        assert out[:2] == ["refused", "90"] and out[2] == "1452", out  # EMSGSIZE, path MTU learnt
        time.sleep(0.3)
        frags = [r for r in bed.br_records()[mark:] if r.get("proto") == 17 and r["src"] != ""]
        assert len(frags) >= 3 and max(r["len"] for r in frags) <= 1452, frags
        assert sum(r["len"] - 20 for r in frags) == 3000 + 8
    finally:
        ce.teardown()
