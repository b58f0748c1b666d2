"""Benchmark: mapelab's userspace BR against plain kernel IPv4 forwarding, same namespaces, same run.

Not a test: it prints figures for the closing note of issue 3.  The topology is the BR test
topology (``tests/testbed/br_fixture.py``: ce1 ── isp(BR) ── inet, names ``mlbr<pid>-…``), and
all traffic stays inside it.  Four bounded measurements with IPv4 packets of ``--size`` bytes
(default 1400):

* ``br-decap``: CE1 sends IPv4-in-IPv6 (UDP from its port set) to the BR, which checks, decapsulates
  and hands it to the kernel toward the internet node;
* ``kernel-up``: CE1 sends the same IPv4 packets natively, the ISP kernel forwards them;
* ``br-encap``: the internet node sends UDP to CE1's shared address and port, the BR encapsulates;
* ``kernel-down``: the internet node sends natively to an address behind CE1's link.

Each rate is what *arrives* at the far veth (its ``rx_packets``), measured over ``--duration``
seconds after a warm-up, with one Python sender process blasting as fast as it can; the four
paths run interleaved for ``--rounds`` rounds and the median is reported.  Kernel
figures are therefore bounded by that sender on this machine, which makes the BR/kernel ratio
an upper bound of the true one; the sender's own rate is printed beside them.

Floors (exit status 1 below any, 2 on bad options): each BR path delivers at least
``FLOORS`` packets per second (10,000 pkt/s of 1400 bytes is 112 Mbit/s, more than any e2e test
needs; this machine measures four to six times that), and the BR counts no malformed packet and
no internal error.

    sudo .venv/bin/python bench/bench_br.py [--duration 3] [--size 1400] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapelab.netio import Ip6Ip4Socket  # noqa: E402
from mapelab.netio.packets import build_ipv4  # noqa: E402
from tests.testbed.br_fixture import BrTopology, build, netns, run  # noqa: E402

FLOORS = {"br-decap": 10_000, "br-encap": 10_000}  # packets per second delivered through the BR
SINK_INET = "198.18.0.99"  # not an address of the internet node: it receives and silently drops
SINK_CE = "10.0.1.99"  # likewise on CE1's link
SHARED = "198.51.100.1"
CE1_PORT = 1056


def _mac(ns: str, dev: str) -> str:
    return json.loads(run("ip", "-n", ns, "-j", "link", "show", "dev", dev).stdout)[0]["address"]


def _rx(ns: str, dev: str) -> int:
    return json.loads(run("ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev).stdout)[0]["stats64"]["rx"]["packets"]


def _udp_payload(size: int, sport: int, dport: int) -> bytes:
    body = b"B" * (size - 28)
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def _sender(kind: str, ns: str, size: int, args: dict[str, Any], stop_at: float, out: Any) -> None:
    """Blast packets from namespace ``ns`` until ``stop_at``; report how many were sent."""
    with netns(ns):
        if kind == "tunnel":
            sock: Any = Ip6Ip4Socket()
            pkt = build_ipv4(socket.inet_aton(SHARED), socket.inet_aton(SINK_INET), 17,
                             _udp_payload(size, CE1_PORT, 9))
            src, dst = args["src"], args["dst"]
            send = sock.send_raw

            def one() -> None:
                send(pkt, src, dst)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((args["dst"], args["dport"]))
            payload = b"B" * (size - 28)
            send_b = sock.send

            def one() -> None:
                send_b(payload)
    n = 0
    errors = 0
    while True:
        for _ in range(256):
            try:
                one()
                n += 1
            except OSError:
                errors += 1
        if time.monotonic() >= stop_at:
            break
    out.put((n, errors))


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (the BR), to show whether it was the bottleneck."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, ns: str, sink_ns: str, sink_dev: str, size: int, duration: float, args: dict[str, Any],
            warmup: float = 0.5, br_pid: int | None = None) -> dict[str, Any]:
    q: Any = mp.get_context("fork").Queue()
    t0 = time.monotonic()
    p = mp.get_context("fork").Process(target=_sender, args=(kind, ns, size, args, t0 + warmup + duration + 0.2, q))
    p.start()
    time.sleep(warmup)
    a, ta, ca = _rx(sink_ns, sink_dev), time.monotonic(), _cpu_seconds(br_pid)
    time.sleep(duration)
    b, tb, cb = _rx(sink_ns, sink_dev), time.monotonic(), _cpu_seconds(br_pid)
    sent, errors = q.get(timeout=30)
    p.join(10)
    pps = (b - a) / (tb - ta)
    return {"pps": round(pps), "mbit_s": round(pps * size * 8 / 1e6, 1),
            "sender_pps": round(sent / (warmup + duration + 0.2)), "send_errors": errors,
            "br_cpu": round((cb - ca) / (tb - ta), 2)}


def bench(duration: float, size: int, rounds: int = 3) -> dict[str, Any]:
    topo: BrTopology = build("cosmote-like", n_ces=1, wan_mtu=1500)
    try:
        topo.start_br()
        # sinks: addresses the far node receives at L2 and drops (no forwarding there, not local)
        run("ip", "-n", topo.isp, "neigh", "replace", SINK_INET, "lladdr", _mac(topo.inet, "eth0"), "dev", "inet")
        run("ip", "-n", topo.isp, "neigh", "replace", SINK_CE, "lladdr", _mac(topo.ces[0], "wan"), "dev", "c1")
        # CE1 keeps a raw protocol-4 socket open so its kernel does not answer tunnel packets with errors
        with netns(topo.ces[0]):
            quiet = Ip6Ip4Socket(rcvbuf=1 << 16)
        br, me = topo.scenario.br.packed, topo.map_addresses[0].packed
        plan = {
            "br-decap": ("tunnel", topo.ces[0], topo.inet, "eth0", {"src": me, "dst": br}),
            "kernel-up": ("udp", topo.ces[0], topo.inet, "eth0", {"dst": SINK_INET, "dport": 9}),
            "br-encap": ("udp", topo.inet, topo.ces[0], "wan", {"dst": SHARED, "dport": CE1_PORT}),
            "kernel-down": ("udp", topo.inet, topo.ces[0], "wan", {"dst": SINK_CE, "dport": 9}),
        }
        # Interleaved rounds, median per path: the machine is shared, and a slow moment should
        # hit BR and kernel alike rather than skew one side of the ratio.
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in plan}
        for _ in range(rounds):
            for k, (kind, ns, sink_ns, sink_dev, args) in plan.items():
                runs[k].append(measure(kind, ns, sink_ns, sink_dev, size, duration, args,
                                       br_pid=topo.br_proc.pid if topo.br_proc else None))
        res: dict[str, Any] = {}
        for k, ms in runs.items():
            med = sorted(ms, key=lambda m: m["pps"])[len(ms) // 2]
            res[k] = {**med, "all_pps": [m["pps"] for m in ms]}
        quiet.close()
        time.sleep(0.6)
        counters = topo.counters()
    finally:
        topo.teardown()
    res["ratio_decap"] = round(res["br-decap"]["pps"] / max(1, res["kernel-up"]["pps"]), 3)
    res["ratio_encap"] = round(res["br-encap"]["pps"] / max(1, res["kernel-down"]["pps"]), 3)
    res["br_counters"] = {k: counters[k] for k in ("tunnel_in_packets", "tunnel_out_packets", "ipv4_in_packets",
                                                   "ipv4_out_packets", "drops", "malformed", "internal_errors")}
    res["size"], res["duration"], res["rounds"], res["cpus"] = size, duration, rounds, os.cpu_count()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--size", type=int, default=1400, help="IPv4 packet size in bytes (default 1400)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported (default 3)")
    ap.add_argument("--json", action="store_true", help="print the raw result as JSON")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_br: needs root (network namespaces, TUN, raw sockets)", file=sys.stderr)
        return 2
    if not 64 <= a.size <= 1452 or not 0.5 <= a.duration <= 60 or not 1 <= a.rounds <= 9:
        print("bench_br: --size must be 64..1452 (fits the tunnel MTU), --duration 0.5..60, --rounds 1..9",
              file=sys.stderr)
        return 2
    r = bench(a.duration, a.size, a.rounds)
    below = [f"{k} {r[k]['pps']} pkt/s < {floor}" for k, floor in FLOORS.items() if r[k]["pps"] < floor]
    below += [f"BR {k} = {r['br_counters'][k]}" for k in ("malformed", "internal_errors") if r["br_counters"][k]]
    r["below_floor"] = below
    if a.json:
        print(json.dumps(r, indent=2))
        return 1 if below else 0
    print(f"IPv4 packets of {r['size']} bytes, {r['duration']} s x {r['rounds']} interleaved rounds (median), "
          f"{r['cpus']} CPUs")
    print(f"{'path':<12} {'pkt/s':>10} {'Mbit/s':>9} {'sender pkt/s':>13} {'BR CPU':>7}  all rounds pkt/s")
    for k in ("br-decap", "kernel-up", "br-encap", "kernel-down"):
        m = r[k]
        print(f"{k:<12} {m['pps']:>10} {m['mbit_s']:>9} {m['sender_pps']:>13} {m['br_cpu']:>7}  {m['all_pps']}")
    print(f"BR/kernel: CE→internet {r['ratio_decap']:.3f}, internet→CE {r['ratio_encap']:.3f}")
    print(f"BR counters: {json.dumps(r['br_counters'])}")
    print(f"floors {', '.join(f'{k} {v:,} pkt/s' for k, v in FLOORS.items())}, no malformed or internal errors: "
          + ("BELOW FLOOR: " + "; ".join(below) if below else "ok"))
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
