"""The e2e suite's checks, as functions: what "this CE does MAP-E correctly" means, one claim each.

They live in the library, not in the test files, because two callers need exactly the same
logic: the e2e tests (which expect every check to pass against a correct CE) and the tests of
the tests (which run the same checks against a CE or BR broken on purpose and expect them to
fail).  A check talks to the CE only through its driver and to the ISP only through the testbed
API, so it gives the same verdict whatever the CE runs on.  Each raises :class:`CheckFailed`
with a message that says what was wrong and where to look.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from mapelab.ce.driver import Capability, CeDriver, CeParams
from mapelab.scenario import Scenario
from mapelab.testbed.api import Testbed


class CheckFailed(AssertionError):
    """A claim about the CE (or the BR) that the evidence contradicts."""


@dataclass
class Traffic:
    """What one burst of LAN traffic did, as the LAN host and the internet saw it."""

    sent: int
    ok: int
    seen: list[dict[str, Any]] = field(default_factory=list)  # the internet's records of this burst
    reports: list[dict[str, Any]] = field(default_factory=list)  # lanclient reports

    @property
    def ports(self) -> list[int]:
        return [int(r["sport"]) for r in self.seen]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def flows_since(tb: Testbed, t0: float, **match: Any) -> list[dict[str, Any]]:
    """The internet's flow records from ``t0`` on (first packet or open event of each flow)."""
    return [r for r in tb.flows(**match) if r.get("ts", 0) >= t0 and r.get("event") in ("open", "packet")]


def send(tb: Testbed, ce: CeDriver, mode: str, count: int, *, timeout: float = 10.0,
         extra: list[str] | None = None, target: str | None = None) -> Traffic:
    """Run ``count`` flows of ``mode`` from the LAN host behind ``ce``; collect what the internet saw."""
    t0 = time.time() - 0.001
    report = tb.lan_client(ce.slot_index, mode, count=count, timeout=timeout, extra=extra, target=target)
    time.sleep(0.2)  # the internet writes its records as packets arrive; let the last ones land
    proto = {"tcp": "tcp", "bulk": "tcp", "udp": "udp", "ping": "icmp"}[mode]
    seen = flows_since(tb, t0, proto=proto)
    ok = sum(1 for f in report["flows"] if f["ok"])
    return Traffic(sent=count, ok=ok, seen=seen, reports=[report])


# -- provisioning ---------------------------------------------------------------------------------


def check_provisioning(scenario: Scenario, got: CeParams, tb: Testbed | None = None) -> None:
    """What the CE derived equals what the model derives from the prefix the CE was delegated."""
    delegated = got.delegated_prefix
    model = scenario.derive(delegated)
    diffs = got.differences(model)
    _require(not diffs, f"the CE's MAP-E parameters differ from the model for {delegated}: " + "; ".join(diffs))
    if tb is not None:
        _require(str(delegated) in tb.delegations(),
                 f"the CE says it holds {delegated}, but the ISP delegated only {sorted(tb.delegations())}")


# -- connectivity and port-set compliance --------------------------------------------------------


def check_connectivity(tb: Testbed, ce: CeDriver, count: int = 3) -> dict[str, Traffic]:
    """TCP echo, UDP echo and ICMP echo from the LAN reach the internet and come back."""
    out = {}
    for mode in ("tcp", "udp", "ping"):
        t = send(tb, ce, mode, count)
        errors = [f["error"] for r in t.reports for f in r["flows"] if not f["ok"]]
        _require(t.ok == count, f"{mode}: {t.ok}/{count} flows from the LAN came back; errors: {errors[:3]}")
        out[mode] = t
    return out


def check_ports_inside(params: CeParams, traffic: Iterable[Traffic], what: str = "flows") -> list[int]:
    """Every source port / echo id the internet saw from the CE's address is in its port set,
    and nothing arrived from another IPv4 source.  Returns the ports seen."""
    ps = params.port_set
    ports, outside, wrong_src = [], [], []
    for t in traffic:
        for rec in t.seen:
            if IPv4Address(rec["src"]) != params.ipv4:
                wrong_src.append(f"{rec['proto']} from {rec['src']}:{rec['sport']}")
                continue
            port = int(rec["sport"])
            ports.append(port)
            if port not in ps:
                outside.append(f"{rec['proto']}:{port}")
    _require(not wrong_src, f"{len(wrong_src)} {what} reached the internet from a source other than the CE's "
             f"{params.ipv4}: {wrong_src[:5]}")
    _require(not outside, f"{len(outside)} of {len(ports)} {what} used ports outside the port set "
             f"({ps.describe()}): {outside[:8]}")
    return ports


def port_set_flows(params: CeParams, floor: int = 500) -> int:
    """How many flows prove compliance: ``floor``, or the whole set when it is smaller."""
    return min(floor, len(params.port_set))


def check_port_set(tb: Testbed, ce: CeDriver, params: CeParams, floor: int = 500) -> list[int]:
    """At least ``floor`` flows (or the whole set), TCP, UDP and ICMP, all inside the port set.

    Evidence from both ends of the tunnel: the internet's records (every port it saw is in the
    set) and the BR's anti-spoofing counters (a strict BR drops out-of-set packets before the
    internet could see them, so a CE that leaks shows up there first).
    """
    n = port_set_flows(params, floor)
    per = {"tcp": n // 2, "udp": n - n // 2, "ping": max(1, min(50, n))}
    spoofed = spoof_drops(tb)
    bursts = [send(tb, ce, mode, count, timeout=5) for mode, count in per.items()]
    ports = check_ports_inside(params, bursts)
    dropped = _settled_drops(tb, 0.6) - spoofed
    _require(dropped == 0, f"the BR dropped {dropped} packets from the CE as spoofed: their source ports or "
             f"address are outside the port set ({params.port_set.describe()})")
    for b, (mode, count) in zip(bursts, per.items(), strict=True):
        _require(b.ok == count, f"{mode}: only {b.ok}/{count} flows came back (see the run's pcaps)")
        distinct = {(r["sport"]) for r in b.seen}
        _require(len(b.seen) >= count and len(distinct) >= min(count, len(params.port_set)) * 0.9,
                 f"{mode}: the internet saw {len(b.seen)} flows with {len(distinct)} distinct source ports "
                 f"for {count} sent")
    return ports


# -- exhaustion --------------------------------------------------------------------------------------


def check_exhaustion(tb: Testbed, ce: CeDriver, params: CeParams, *, hold: float = 2.0,
                     recover_timeout: float = 90.0) -> dict[str, Any]:
    """More concurrent UDP flows than the set holds: nothing leaves outside the set, the excess is
    refused cleanly (no reply, no leak), and new flows work again once the old ones end.

    Each flow keeps its NAT mapping for the CE's UDP state timeout (30 s on Linux, pf's
    udp.single is 30 s too), so flows sent one after another within that time hold their ports
    concurrently; ``hold`` is how long each waits for its echo.  Run it on a CE that has no other
    flows, or the free ports are fewer than the set."""
    size = len(params.port_set)
    n = size + max(5, size // 4)
    t = send(tb, ce, "udp", n, timeout=hold)
    ports = check_ports_inside(params, [t], "exhaustion flows")
    # A LAN port the client's kernel reuses is the same flow again (same NAT mapping): count LAN ports.
    worked = len({f["sport"] for r in t.reports for f in r["flows"] if f["ok"]})
    _require(worked <= size, f"{worked} concurrent UDP flows came back through a port set of {size}: "
             "some flow must have left outside the set or shared a port")
    _require(len(set(ports)) <= size, f"{len(set(ports))} distinct ports from a set of {size}")
    _require(worked >= size // 2, f"only {worked} of {n} concurrent flows worked with {size} ports free: "
             "the CE does not use its port set")
    # Recovery: once the old flows are gone (the CE's own state timeout), a fresh burst that fits works.
    deadline = time.monotonic() + recover_timeout
    again = min(size, 8)
    while True:
        r = send(tb, ce, "udp", again, timeout=3)
        if r.ok == again:
            check_ports_inside(params, [r], "flows after exhaustion")
            break
        _require(time.monotonic() < deadline,
                 f"{recover_timeout:.0f} s after exhaustion only {r.ok}/{again} new UDP flows work")
        time.sleep(2)
    return {"offered": n, "worked": worked, "distinct_ports": len(set(ports)), "set_size": size}


# -- two CEs sharing one address ---------------------------------------------------------------------


def check_shared_address(tb: Testbed, ce1: CeDriver, p1: CeParams, ce2: CeDriver, p2: CeParams,
                         count: int = 40) -> None:
    """Two CEs on one IPv4 address with different PSIDs: disjoint ports, replies reach the right CE."""
    _require(p1.ipv4 == p2.ipv4 and p1.psid != p2.psid,
             f"the scenario does not make the two CEs share an address: {p1.ipv4}/{p1.psid} vs {p2.ipv4}/{p2.psid}")
    ports = []
    for ce, p in ((ce1, p1), (ce2, p2)):
        for mode in ("tcp", "udp", "ping"):
            t = send(tb, ce, mode, count)
            _require(t.ok == count, f"CE {ce.slot_index} ({p.ipv4} PSID {p.psid}): {mode} {t.ok}/{count} "
                     "replies came back — replies reached the wrong CE or were lost")
            ports.append(set(check_ports_inside(p, [t])))
    one, two = set().union(*ports[:3]), set().union(*ports[3:])
    _require(not one & two, f"ports used by both CEs: {sorted(one & two)[:10]}")


# -- anti-spoofing ------------------------------------------------------------------------------------

SPOOF_REASONS = ("address-mismatch", "port-outside-set", "no-port", "no-rule")


def br_counters(tb: Testbed) -> dict[str, Any]:
    """The BR's counters (it rewrites them atomically at least twice a second)."""
    path = Path(tb.status.extra["br_state_dir"]) / "br-counters.json"
    for _ in range(50):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise CheckFailed(f"cannot read the BR's counters at {path}")


def spoof_drops(tb: Testbed) -> int:
    drops = br_counters(tb).get("drops", {})
    return sum(int(drops.get(k, 0)) for k in SPOOF_REASONS)


def _settled_drops(tb: Testbed, wait: float = 1.2) -> int:
    """The spoof-drop count once the BR has flushed its counters (every 0.5 s)."""
    time.sleep(wait)
    return spoof_drops(tb)


def check_antispoof(tb: Testbed, ce: CeDriver, params: CeParams) -> dict[str, int]:
    """A correct CE never trips the BR's anti-spoofing check; a packet from the CE's MAP address
    with a port outside its set, or with another CE's address, is dropped and counted.

    The spoofed packets come from the testbed's access-network host (they reach the ISP's WAN
    bridge as the CE's would), so the CE under test needs nothing installed for this check."""
    before = _settled_drops(tb, 0.0)
    n = min(20, len(params.port_set) // 2)
    t = send(tb, ce, "udp", n)
    _require(t.ok == n, f"only {t.ok}/{n} UDP flows came back before the spoofing test")
    clean = _settled_drops(tb)
    _require(clean == before, f"the BR counted {clean - before} anti-spoofing drops for a correct CE's traffic")
    ps = params.port_set
    bad_port = next(p for p in range(1024, 65536) if p not in ps) if ps.restricted else None
    inet = tb.status.inet_addresses[0]
    br = params.br or tb.status.br_address
    injections = []
    if bad_port is not None:
        injections.append(("port outside the set", str(params.ipv4), bad_port))
    other = IPv4Address(int(params.ipv4) ^ 1) if params.ipv4_len == 32 else IPv4Address(int(params.ipv4) ^ (1 << 31))
    injections.append(("another IPv4 address", str(other), next(iter(ps))))
    counts = {}
    for what, inner_src, sport in injections:
        base = spoof_drops(tb)
        seen_before = len(tb.flows(proto="udp", src=inner_src, sport=sport))
        tb.inject(src=str(params.map_address), dst=str(br), inner_src=inner_src, inner_dst=str(inet), sport=sport,
                  count=3)
        after = wait_counter(lambda: spoof_drops(tb), base, timeout=3.0)
        leaked = len(tb.flows(proto="udp", src=inner_src, sport=sport)) - seen_before
        _require(after - base >= 3 and leaked == 0,
                 f"spoofed packets ({what}: {inner_src}:{sport} from {params.map_address}) were not dropped by the "
                 f"BR: anti-spoofing drops rose by {after - base} of 3, {leaked} reached the internet")
        counts[what] = after - base
    return counts


def wait_counter(read: Callable[[], int], above: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        v = read()
        if v > above + 2 or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


# -- MTU -------------------------------------------------------------------------------------------------


def check_bulk_download(tb: Testbed, ce: CeDriver, size: int = 10_000_000) -> dict[str, Any]:
    """A 10 MB TCP download (DF set, as Linux TCP always does) completes through the tunnel: the
    MSS clamp or PMTU discovery must fit segments into WAN MTU − 40."""
    t = send(tb, ce, "bulk", 1, timeout=60, extra=["--size", str(size)])
    flow = t.reports[0]["flows"][0]
    _require(flow["ok"] and flow["bytes"] == size,
             f"{size}-byte download: {flow['bytes']} bytes arrived, error {flow['error']}")
    return {"bytes": flow["bytes"], "ms": flow["ms"], "mbit_s": round(size * 8 / max(flow["ms"], 1) / 1000, 1)}


def check_large_udp(tb: Testbed, ce: CeDriver, payload: int = 3000) -> None:
    """RFC 2473 §7: a datagram bigger than the tunnel MTU, without DF, is fragmented (IPv4 before
    encapsulation, or IPv6 after) and still arrives whole; the echo proves it came back too."""
    t = send(tb, ce, "udp", 3, extra=["--payload", str(payload)])
    _require(t.ok == 3, f"{payload}-byte UDP datagrams: {t.ok}/3 echoes came back whole")
    sizes = {int(r.get("bytes_in", 0)) for r in t.seen}
    _require(sizes == {payload}, f"the internet received datagrams of {sorted(sizes)} bytes, not {payload}")


# -- lease changes ---------------------------------------------------------------------------------------


def check_renumbering(tb: Testbed, ce: CeDriver, scenario: Scenario, before: CeParams, *, slack: float = 6.0
                      ) -> tuple[CeParams, float]:
    """A renumbered prefix gives new IPv4/PSID/MAP address within T1 plus ``slack`` seconds,
    connectivity returns, and no packet uses the old address or ports afterwards."""
    ce.require(Capability.DHCP_MAPE, "following a renumbered lease")
    t0 = time.monotonic()
    tb.renumber()
    t1 = scenario.dhcp.t1
    try:
        after = ce.wait_provisioned(t1 + slack, different_from=before)
    except Exception as e:
        raise CheckFailed(f"no new MAP-E parameters within T1 ({t1} s) + {slack} s of renumbering: {e}") from None
    took = time.monotonic() - t0
    check_provisioning(scenario, after)
    _require(after.delegated_prefix != before.delegated_prefix, "renumbering did not change the delegated prefix")
    since = time.time()
    check_connectivity(tb, ce)
    traffic = [Traffic(0, 0, flows_since(tb, since, proto=p)) for p in ("tcp", "udp", "icmp")]
    stale = [r for t in traffic for r in t.seen
             if IPv4Address(r["src"]) == before.ipv4 and int(r["sport"]) in before.port_set
             and (IPv4Address(r["src"]) != after.ipv4 or int(r["sport"]) not in after.port_set)]
    _require(not stale, f"{len(stale)} packets after renumbering still used the old port set: {stale[:3]}")
    check_ports_inside(after, traffic, "flows after renumbering")
    return after, took


def check_withdrawal(tb: Testbed, ce: CeDriver, scenario: Scenario, *, slack: float = 6.0) -> float:
    """Option 94 withdrawn by the ISP → the CE tears IPv4 down within T1 + ``slack``; no IPv4
    packet leaves the CE afterwards."""
    ce.require(Capability.DHCP_MAPE, "withdrawing MAP-E when option 94 goes")
    t0 = time.monotonic()
    tb.withdraw()
    try:
        ce.wait_withdrawn(scenario.dhcp.t1 + slack)
    except Exception as e:
        raise CheckFailed(f"the CE kept MAP-E {scenario.dhcp.t1 + slack} s after option 94 was withdrawn: {e}"
                          ) from None
    took = time.monotonic() - t0
    since = time.time()
    t = send(tb, ce, "udp", 3, timeout=2)
    _require(t.ok == 0 and not t.seen, f"{t.ok} UDP flows still worked and the internet saw {len(t.seen)} "
             "after MAP-E was withdrawn")
    _require(not flows_since(tb, since), "IPv4 traffic reached the internet after the withdrawal")
    return took


def check_unchanged_renewal(tb: Testbed, ce: CeDriver, params: CeParams, *, size: int = 40_000_000) -> None:
    """An unchanged renewal in the middle of a long download neither re-applies nor interrupts it.

    It needs the CE to renew on demand, to count its RENEWs and its configuration applies: without
    them the check could not see the renewal happen or be harmless, so it says unsupported."""
    ce.require(Capability.RENEW, "an unchanged renewal")
    ce.require(Capability.DHCP_COUNTERS, "proving the RENEW was sent")
    ce.require(Capability.GENERATION, "proving an unchanged renewal re-applied nothing")
    state = ce.state()
    generation = state.generation
    renews = state.counters.get("dhcp-sent-RENEW", 0)
    _require(generation is not None, "the CE declares the generation capability but reports no generation")
    lan = ce.lan_host()
    argv = lan.argv([sys.executable, "-m", "mapelab.testbed.lanclient", "bulk", "--target",
                     str(tb.status.inet_addresses[0]), "--count", "1", "--size", str(size), "--timeout", "60"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        ce.renew()
        same = ce.wait_provisioned(10)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads(out)
    flow = report["flows"][0]
    _require(same == params, f"the renewal changed the CE's parameters: {same.differences(params)}")
    _require(flow["ok"] and flow["bytes"] == size,
             f"the download across the renewal got {flow['bytes']} of {size} bytes ({flow['error']})")
    state = ce.state()
    _require(state.counters.get("dhcp-sent-RENEW", 0) > renews, "the CE sent no RENEW when asked to renew")
    _require(state.generation == generation, "an unchanged renewal re-applied the configuration")
