"""The reference CE's nftables ruleset, rendered from the MAP-E model — pure text, no I/O.

Why one rendered table: the whole policy (port-set NAT, MSS clamp, egress guard, ingress check)
is replaced in one ``nft -f`` transaction, so there is never a moment with the old port set and
the new address, or with NAT but no guard.

* NAT to exactly the port set in ONE rule: a named interval map from ``numgen inc mod N`` to
  ``address . port-range`` with one element per range, and ``snat ip to numgen inc mod N map
  @psmap`` (the form that lists back correctly on nft 1.0.6; see reference/mape.md).  Echo
  identifiers are NATed by the same rule (the kernel treats the ICMP id as the port).
  k = 0: plain ``snat ip to <address>``.
* ``guard`` (postrouting, after NAT): anything leaving the tunnel with another source address,
  a port or echo id outside the set, or — on a shared address — a protocol without ports, is
  dropped and counted.  This is what makes "no packet leaves with the old port set" hold even
  for a conntrack entry that survived a renumbering.
* ``ingress`` (prerouting, before conntrack's de-NAT): decapsulated packets not for our address
  and port set are dropped and counted (RFC 7597 §8: the CE drops packets not addressed to it).
* MSS clamp to tunnel MTU − 40 on SYNs in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass

from mapelab.mape import MapeParams

TABLE = "mapece"
FAULTS = ("nat-whole-range", "no-guard", "ignore-renumbering", "no-mss-clamp")


@dataclass(frozen=True)
class NatPlan:
    """What the ruleset needs besides the model: interface names, MTU and deliberate faults."""

    tunnel_if: str
    tunnel_mtu: int
    faults: tuple[str, ...] = ()

    @property
    def mss(self) -> int:
        """IPv4 (20) + TCP (20) headers inside the tunnel MTU."""
        return self.tunnel_mtu - 40


def _elements(values: list[str]) -> str:
    return ", ".join(values)


def render(params: MapeParams, plan: NatPlan) -> str:
    """The ``nft -f`` input that atomically replaces table ``ip mapece`` for ``params``.

    ``plan.faults`` exist for the tests of the tests (issue 4): ``nat-whole-range`` NATs to
    1024-65535 and, with ``no-guard``, lets it out — a CE the port-set test must fail.
    """
    tif = plan.tunnel_if
    addr = str(params.ipv4)
    ps = params.port_set
    restricted = ps.restricted and "nat-whole-range" not in plan.faults
    guard = "no-guard" not in plan.faults and "nat-whole-range" not in plan.faults
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    intervals = ps.nft_intervals()
    if restricted:
        n = len(intervals)
        # A concatenated interval value must be written as a range even for one port (4933-4933):
        # nft 1.0.6 rejects a bare port there with "Invalid argument".
        elems = _elements([f"{i} : {addr} . {a}-{b}" for i, (a, b) in enumerate(ps.ranges())])
        lines += [
            "  map psmap {",
            f"    typeof numgen inc mod {n} : interval ip saddr . th sport",
            "    flags interval",
            f"    elements = {{ {elems} }}",
            "  }",
        ]
    if ps.restricted:
        lines += [
            "  set ports {",
            "    type inet_service",
            "    flags interval",
            f"    elements = {{ {_elements(intervals)} }}",
            "  }",
            "  set echoids {",
            "    typeof icmp id",
            "    flags interval",
            f"    elements = {{ {_elements(intervals)} }}",
            "  }",
        ]
    lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
    if restricted:
        lines.append(
            f'    oifname "{tif}" meta l4proto {{ tcp, udp, icmp }} counter '
            f'snat ip to numgen inc mod {len(intervals)} map @psmap comment "nat-port-set"'
        )
        lines.append(f'    oifname "{tif}" counter snat ip to {addr} comment "nat-other"')
    elif ps.restricted:  # fault: NAT to the whole non-system range
        lines.append(
            f'    oifname "{tif}" meta l4proto {{ tcp, udp }} counter snat ip to {addr}:1024-65535 '
            'comment "nat-whole-range-fault"'
        )
        lines.append(f'    oifname "{tif}" counter snat ip to {addr} comment "nat-other"')
    else:
        lines.append(f'    oifname "{tif}" counter snat ip to {addr} comment "nat-address"')
    lines.append("  }")
    if "no-mss-clamp" not in plan.faults:
        mss = plan.mss
        lines += [
            "  chain forward {",
            "    type filter hook forward priority mangle; policy accept;",
            f'    oifname "{tif}" tcp flags syn / syn,rst tcp option maxseg size > {mss} counter '
            f'tcp option maxseg size set {mss} comment "mss-clamp-out"',
            f'    iifname "{tif}" tcp flags syn / syn,rst tcp option maxseg size > {mss} counter '
            f'tcp option maxseg size set {mss} comment "mss-clamp-in"',
            "  }",
        ]
    if guard:
        lines += [
            "  chain guard {",
            "    type filter hook postrouting priority 300; policy accept;",
            f'    oifname "{tif}" ip saddr != {addr} counter drop comment "egress-wrong-address"',
        ]
        if ps.restricted:
            lines += [
                f'    oifname "{tif}" meta l4proto {{ tcp, udp }} th sport != @ports counter drop '
                'comment "egress-port-outside-set"',
                f'    oifname "{tif}" icmp type echo-request icmp id != @echoids counter drop '
                'comment "egress-echo-id-outside-set"',
                f'    oifname "{tif}" meta l4proto != {{ tcp, udp, icmp }} counter drop '
                'comment "egress-no-port-protocol"',
            ]
        lines.append("  }")
    lines += [
        "  chain ingress {",
        "    type filter hook prerouting priority raw; policy accept;",
        f'    iifname "{tif}" ip daddr != {addr} counter drop comment "ingress-not-our-address"',
    ]
    if ps.restricted:
        lines += [
            f'    iifname "{tif}" meta l4proto {{ tcp, udp }} ip frag-off & 0x1fff == 0 th dport != @ports '
            'counter drop comment "ingress-port-outside-set"',
            f'    iifname "{tif}" icmp type {{ echo-reply, echo-request }} icmp id != @echoids counter drop '
            'comment "ingress-echo-id-outside-set"',
        ]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def render_delete() -> str:
    """Remove the table if it exists (``table`` first makes the delete idempotent)."""
    return f"table ip {TABLE}\ndelete table ip {TABLE}\n"
