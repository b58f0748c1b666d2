"""The byte-for-byte expected OpenBSD CE renders: which cases, and how to regenerate them.

After a deliberate change to mapelab.openbsd.ceconf or a profile, regenerate and review the
diff before committing:

    .venv/bin/python -m tests.unit.openbsd.ce_renders

Each case is (scenario, profile); the CE sits in testbed slot 1 (LAN 192.168.1.0/24) with the
scenario's WAN MTU.  Files land in data/ceconf/<scenario>/<profile>/, guest paths flattened
(/etc/pf.anchors/mape -> etc_pf.anchors_mape).
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from mapelab import scenario
from mapelab.ce import openbsd_profiles as profiles

DATA = Path(__file__).resolve().parent / "data" / "ceconf"
LAN = (IPv4Network("192.168.1.0/24"),)
CASES = [(s, p) for s in ("cosmote-like", "rfc7597-example1") for p in ("static", "dhcp6leased")] + [
    (s, "static") for s in ("offset0", "k0-full-address", "k10-single-ports", "multi-rule", "explicit-psid")
]


def flat(guest_path: str) -> str:
    return guest_path.strip("/").replace("/", "_")


def render(scenario_name: str, profile_name: str) -> dict[str, str]:
    sc = scenario.load(scenario_name)
    files = profiles.render_files(profiles.load(profile_name), sc.derive(), LAN, sc.wan_mtu)
    return {flat(k): v for k, v in files.items()}


def main() -> None:
    for s, p in CASES:
        d = DATA / s / p
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for name, text in render(s, p).items():
            (d / name).write_text(text)
        print(f"wrote {d.relative_to(DATA.parent.parent.parent.parent.parent)}")


if __name__ == "__main__":
    main()
