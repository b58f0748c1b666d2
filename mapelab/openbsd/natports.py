"""Which source ports pf on OpenBSD can actually hand out for a MAP-E CE's NAT rule.

The port set says which ports the CE *may* use; pf hands out fewer.  An exhaustion check on
an OpenBSD CE must expect exactly these, not the whole set, or it fails a correct CE:

* pf walks each port range it is given and skips OpenBSD's reserved ports
  (``in_baddynamic()``; data/reserved_ports.toml, with the sources and revisions) -- except
  when the range is a single port (``low == high``), which it takes without that check;
* ``map-e-portset a/k/psid`` gives pf one range per MAP-E port block (mape79's
  ``pf_get_sport_mape()``); ``port lo:hi`` gives it that one range; a plain ``nat-to``
  (k = 0) uses pf's default proxy range 50001-65535 (PF_NAT_PROXY_PORT_LOW/HIGH: mape79's
  pfail68 regress shows pfctl treating ``port 50001:65535`` as "no port range given");
* ICMP echo ids have no reserved list.  Under ``map-e-portset`` mape79 keeps them in the
  port blocks; any other nat-to widens them to 1-65535 (pf_lb.c ``pf_get_sport``).
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from mapelab.mape import MapeParams

from .ceconf import nat_plan

DATA = Path(__file__).resolve().parent / "data" / "reserved_ports.toml"
#: pfvar.h PF_NAT_PROXY_PORT_LOW / PF_NAT_PROXY_PORT_HIGH: a nat-to without ``port``.
PF_NAT_PROXY_RANGE = (50001, 65535)
PROTOCOLS = ("tcp", "udp", "icmp")


@cache
def reserved_ports(proto: str, *, ipsec: bool = True) -> frozenset[int]:
    """OpenBSD's boot-time reserved ports for ``proto`` (UDP adds udpencap_port with IPSEC)."""
    if proto not in PROTOCOLS:
        raise ValueError(f"protocol {proto!r}: use one of {', '.join(PROTOCOLS)}")
    if proto == "icmp":
        return frozenset()
    table = tomllib.loads(DATA.read_text())[proto]
    ports = set(table["ports"])
    if proto == "udp" and ipsec:
        ports.add(table["udpencap_port"])
    return frozenset(ports)


def pf_ranges(p: MapeParams) -> list[tuple[int, int]]:
    """The (low, high) port ranges pf searches for this CE's rendered NAT rule."""
    if nat_plan(p).method == "plain":
        return [PF_NAT_PROXY_RANGE]
    return p.port_set.ranges()


def allocatable_ports(p: MapeParams, proto: str, *, ipsec: bool = True) -> frozenset[int]:
    """Every source port (or ICMP echo id) pf can give a translated flow of ``proto``."""
    if proto == "icmp":
        if nat_plan(p).method == "map-e-portset":
            return frozenset(p.port_set)
        return frozenset(range(1, 65536))
    reserved = reserved_ports(proto, ipsec=ipsec)
    out: set[int] = set()
    for lo, hi in pf_ranges(p):
        if lo == hi:
            out.add(lo)
        else:
            out.update(port for port in range(lo, hi + 1) if port not in reserved)
    return frozenset(out)


def withheld_ports(p: MapeParams, proto: str, *, ipsec: bool = True) -> frozenset[int]:
    """Ports of the port set pf never hands out (what an exhaustion check must not expect)."""
    in_set = frozenset(p.port_set) if p.port_set.restricted else frozenset(range(1, 65536))
    return in_set - allocatable_ports(p, proto, ipsec=ipsec)
