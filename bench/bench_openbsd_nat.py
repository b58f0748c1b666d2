"""Benchmark (not a test): what ``map-e-portset`` costs pf, measured in one OpenBSD CE in one run.

The question a tech@ reviewer asks of the patch: how much slower does pf set up new translated
connections when it must pick source ports from a MAP-E port set instead of its usual range?
This boots the OpenBSD build image as a CE on a testbed (``--profile static``: mapelab applies
the MAP-E configuration, so the pf anchor can be swapped in place), then, in the same VM and the
same run, alternates the anchor's NAT rule between ``nat-to (gif0) map-e-portset a/k/psid`` and a
plain ``nat-to (gif0)`` and measures new TCP connections per second from the LAN host (connect,
echo, close through the tunnel to the testbed's internet), ``--rounds`` times each:

* idle: nothing else holds a translated port;
* at 90 % occupancy: first ``0.9 × |port set|`` TCP connections are opened and held, then the
  same measurement runs with the few ports that are left (plain nat-to holds as many, from its
  own range, so the two are compared at the same load).

It prints the rates, the ratio map-e-portset/plain (median of the rounds) and writes them to
``runs/bench-openbsd-nat-<time>/result.json`` with the accelerator, the image and the kernel.
It needs an OpenBSD build image (``invoke build-vm``); without one it exits 2 saying so.

    sudo .venv/bin/python bench/bench_openbsd_nat.py [--scenario cosmote-like] [--image KEY]
         [--count 300] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapelab import scenario as scenario_mod  # noqa: E402
from mapelab.ce.driver import CeError  # noqa: E402
from mapelab.files import atomic_write  # noqa: E402


def lan_flows(tb: Any, slot: int, count: int, *, hold: float = 0.0, parallel: int = 32) -> dict[str, Any]:
    """``count`` TCP echo connections from the LAN host; (connections that worked, seconds)."""
    t0 = time.monotonic()
    report = tb.lan_client(slot, "tcp", count=count, timeout=10,
                           extra=["--parallel", str(parallel), *(["--hold", str(hold)] if hold else [])])
    took = time.monotonic() - t0
    ok = sum(1 for f in report["flows"] if f["ok"])
    return {"count": count, "ok": ok, "seconds": round(took, 3), "per_second": round(ok / took, 1) if took else 0.0}


def set_nat(ce: Any, rule_option: str) -> None:
    """Load the anchor with the NAT rule's option replaced (the rest of the anchor unchanged), and
    drop the LAN's old states so each phase starts from the same pf state table."""
    cfg = ce.applied
    anchor = cfg.anchor_text.replace(cfg.nat.option, rule_option) if cfg.nat.option else cfg.anchor_text
    lan = ce.slot.lan_prefix
    r = ce.guest.run(f"pfctl -a {cfg.site.anchor} -f - <<'EOF'\n{anchor}EOF\npfctl -k {lan}", timeout=60)
    if r.status != 0:
        raise CeError(f"loading the anchor for {rule_option or 'plain nat-to'} failed: {r.stderr.strip()}")


def measure(tb: Any, ce: Any, option: str, count: int, rounds: int, hold: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(rounds):
        set_nat(ce, option)
        holder = None
        if hold:
            lan = ce.lan_host()
            argv = lan.argv([sys.executable, "-m", "mapelab.testbed.lanclient", "tcp", "--target",
                             str(tb.status.inet_addresses[0]), "--count", str(hold), "--hold", "120",
                             "--parallel", str(hold), "--timeout", "150"])
            holder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
            time.sleep(15)  # the held connections are open (through pf) before the measurement starts
        try:
            out.append(lan_flows(tb, ce.slot_index, count))
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="map-e-portset against plain nat-to: new connections per second")
    ap.add_argument("--scenario", default="cosmote-like")
    ap.add_argument("--image", default=None, help="OpenBSD build image key (default: the newest build)")
    ap.add_argument("--count", type=int, default=300, help="connections per idle measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--accel", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from mapelab.ce import create
    from mapelab.ce.backend_openbsd import OpenBsdCe
    from mapelab.qemu import accel as accel_mod
    from mapelab.testbed import api
    from mapelab.testbed.runs import runs_root

    ready = OpenBsdCe.image_ready(image=a.image)
    if not ready.ready:
        print(f"bench_openbsd_nat: {ready.detail}", file=sys.stderr)
        return 2
    sc = scenario_mod.load(a.scenario)
    out_dir = runs_root() / time.strftime("bench-openbsd-nat-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    acc = accel_mod.choose(a.accel)
    with api.testbed(sc.path, ces=1, vm_slots=(1,), log=lambda *_: None) as tb:
        ce = create("openbsd", tb.status.slots[0], state_dir=out_dir / "ce", profile="static", image=a.image,
                    scenario=tb.status.extra["effective_scenario"], accel=a.accel)
        with ce:
            params = ce.wait_provisioned(acc.timeout(120, 600))
            if ce.applied is None or ce.applied.nat.method != "map-e-portset":
                print(f"bench_openbsd_nat: scenario {sc.name} does not use map-e-portset on OpenBSD "
                      f"({ce.applied.nat.method if ce.applied else 'not applied'}); pick a shared-address scenario",
                      file=sys.stderr)
                return 2
            mape = ce.applied.nat.option
            usable = len(ce.usable_ports("tcp") or params.port_set)
            hold = int(0.9 * usable)
            left = max(10, min(a.count, int((usable - hold) * 0.8)))
            result: dict[str, Any] = {
                "scenario": sc.name, "image": ce.image.key, "accel": acc.name, "port_set": params.port_set.describe(),
                "usable_tcp_ports": usable, "system": dict(ce.state().system),
                "idle": {"map-e-portset": measure(tb, ce, mape, a.count, a.rounds, 0),
                         "plain": measure(tb, ce, "", a.count, a.rounds, 0)},
                "occupied_90": {"held": hold, "measured": left,
                                "map-e-portset": measure(tb, ce, mape, left, a.rounds, hold),
                                "plain": measure(tb, ce, "", left, a.rounds, hold)},
            }
            set_nat(ce, mape)
    for phase in ("idle", "occupied_90"):
        m = statistics.median(r["per_second"] for r in result[phase]["map-e-portset"])
        p = statistics.median(r["per_second"] for r in result[phase]["plain"])
        result[phase]["ratio_mape_to_plain"] = round(m / p, 3) if p else None
    atomic_write(out_dir / "result.json", json.dumps(result, indent=2) + "\n")
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        for phase in ("idle", "occupied_90"):
            r = result[phase]
            rates = {k: [x["per_second"] for x in r[k]] for k in ("map-e-portset", "plain")}
            print(f"{phase:12s} map-e-portset {rates['map-e-portset']} conn/s, plain nat-to {rates['plain']} conn/s, "
                  f"ratio {r['ratio_mape_to_plain']}")
        print(f"({acc.name}; image {result['image']}; {result['system'].get('kern.version', '').splitlines()[0]}; "
              f"record {out_dir / 'result.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
