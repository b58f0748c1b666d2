"""Benchmark (not a test): port-set membership checks and full derivations per second on one core.

Floors: 1,000,000 membership checks/s and 50,000 derivations/s; exit status 1 below either.
Run: .venv/bin/python bench/bench_mape.py
"""

from __future__ import annotations

import sys
import time
from ipaddress import IPv4Network, IPv6Address, IPv6Network

from mapelab.mape import PortParams, PortSet, Rule, derive

FLOORS = {"membership": 1_000_000, "derivation": 50_000}


def rate(fn, n: int) -> float:
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        fn(n)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def membership(n: int) -> None:
    ps = PortSet(6, 6, 2)
    ports = list(range(n % 65536)) if n < 65536 else list(range(65536))
    loops = max(1, n // len(ports))
    for _ in range(loops):
        for p in ports:
            p in ps  # noqa: B015 - the check is what is measured


def derivation(n: int) -> None:
    rules = [
        Rule(IPv6Network("2001:db8:6200::/42"), IPv4Network("198.51.100.0/24"), 14, PortParams(6, 0, 0)),
        Rule(IPv6Network("2001:db8::/32"), IPv4Network("192.0.2.0/24"), 16),
    ]
    br = IPv6Address("2001:db8:ffff::1")
    base = int(IPv6Address("2001:db8:6200::"))
    prefixes = [IPv6Network((base | (i << 72), 56)) for i in range(1 << 14)]
    for i in range(n):
        derive(rules, prefixes[i & 0x3FFF], br)


def main() -> int:
    """Exit status 1 when any rate is below its floor: a script or CI step must not read "BELOW FLOOR"
    in the output and still see success."""
    results = {"membership": rate(membership, 65536 * 20), "derivation": rate(derivation, 100_000)}
    below = []
    for name, value in results.items():
        verdict = "ok" if value >= FLOORS[name] else "BELOW FLOOR"
        print(f"{name:11s} {value:14,.0f}/s   floor {FLOORS[name]:>10,}/s   {verdict}")
        if value < FLOORS[name]:
            below.append(name)
    if below:
        print(f"bench_mape: below the floor: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
