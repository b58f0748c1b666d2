"""What an OpenBSD MAP-E CE configures, rendered from the model: commands, pf anchor, files.

One pure module (stdlib and :mod:`mapelab.mape` only) so that the calculator's "OpenBSD CE:"
lines, the OpenBSD CE backend and the byte-for-byte expected renders of the tests all come
from the same text.  It renders what RFC 7597 asks of a CE on OpenBSD:

* the MAP address as a /128 on the WAN, a gif(4) tunnel from it to the BR with MTU
  WAN MTU - 40 (RFC 2473), the IPv4 address (or the first address of an IPv4 prefix) on the
  tunnel, and the IPv4 default route through it;
* a pf anchor with the MSS clamp (tunnel MTU - 40), NAT for the router itself and each LAN
  network, IPv4-in-IPv6 (protocol 4, "ipencap") passed only between the MAP address and the
  BR, and outbound IPv4 on the tunnel kept in state.  Nothing unsolicited is passed in.

pf cannot express every port set the same way, and this module says so instead of rendering
something pfctl refuses (checked against the published mape79.patch parse.y and its pfail68
regress file):

=====================  ==================================================================
port set               rendered NAT
=====================  ==================================================================
k = 0                  plain ``nat-to (gif0)`` (the CE owns every port)
a >= 1, k >= 1         ``nat-to (gif0) map-e-portset a/k/psid``
a = 0, k >= 1          ``nat-to (gif0) port lo:hi`` (one contiguous range) -- pfctl refuses
                       ``map-e-portset 0/k/psid`` ("MAP-E PSID offset must be 1-15")
=====================  ==================================================================

What the rendered configuration still cannot do is listed in :attr:`CeConfig.limitations`
as :class:`Unsupported` (what, reason), so a check that needs it ends ``unsupported:
<reason>``, never passed.  A parameter set that cannot be rendered at all raises
:class:`CannotRender` carrying the same structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from mapelab.mape import MapeParams

#: RFC 2473 §7.2 / RFC 7597 §8.3.1: the IPv6 header costs 40 bytes of the WAN MTU.
IPV6_HEADER = 40
#: An IPv4 header (20) plus a TCP header (20) without options: MSS = MTU - 40.
TCP_IPV4_HEADERS = 40
#: The default IPv4 peer of the point-to-point gif(4) (see :class:`Site`).
GIF_PEER_IPV4 = IPv4Address("0.0.0.1")
#: gif(4) accepts MTUs in this range (the published maped-up checks the same bounds).
GIF_MTU_RANGE = (1280, 8192)


@dataclass(frozen=True)
class Unsupported:
    """Something the rendered CE cannot do, with the reason a check reports verbatim."""

    what: str  # a stable id a check can ask about, e.g. "icmp-echo-ids-in-set"
    reason: str

    def __str__(self) -> str:
        return f"unsupported: {self.reason}"


class CannotRender(ValueError):
    """These parameters cannot be configured on OpenBSD at all; ``unsupported`` says why."""

    def __init__(self, unsupported: Unsupported) -> None:
        super().__init__(str(unsupported))
        self.unsupported = unsupported


@dataclass(frozen=True)
class Site:
    """The CE's own facts that the MAP-E parameters do not carry."""

    wan_if: str
    lan_networks: tuple[IPv4Network, ...] = ()
    wan_mtu: int = 1500
    gif_if: str = "gif0"
    anchor: str = "mape"
    # The IPv4 destination of the point-to-point gif(4).  Only this host uses it, as the next
    # hop of the default route; 0.0.0.1 is what the published maped uses (MAPED_PEER_IPV4).
    peer_ipv4: IPv4Address = field(default_factory=lambda: GIF_PEER_IPV4)

    def __post_init__(self) -> None:
        lo, hi = GIF_MTU_RANGE
        tunnel = self.wan_mtu - IPV6_HEADER
        if not lo <= tunnel <= hi:
            raise CannotRender(Unsupported(
                "tunnel-mtu",
                f"WAN MTU {self.wan_mtu} gives a tunnel MTU of {tunnel}; gif(4) needs {lo}..{hi}",
            ))
        for name in (self.wan_if, self.gif_if, self.anchor):
            if not name or any(c.isspace() or c in "\"'\\$;|&()" for c in name):
                raise ValueError(f"interface/anchor name {name!r}: use a plain name such as vio1 or gif0")


@dataclass(frozen=True)
class Command:
    """One command on the CE: argv, and text for its standard input when it reads one."""

    argv: tuple[str, ...]
    stdin: str | None = None

    def shell(self) -> str:
        """The command as a person types it; standard input becomes a quoted here-document."""
        line = " ".join(self.argv)
        if self.stdin is None:
            return line
        return f"{line} <<'EOF'\n{self.stdin}EOF"


@dataclass(frozen=True)
class NatPlan:
    """How pf translates source ports for this port set (see the module table)."""

    method: str  # "map-e-portset", "port-range" or "plain"
    option: str  # the text after ``nat-to (gif0)``, possibly empty

    def rule(self, gif_if: str, source: str) -> str:
        tail = f" {self.option}" if self.option else ""
        return f"match out on {gif_if} inet from {source} to any nat-to ({gif_if}){tail}"


def nat_plan(p: MapeParams) -> NatPlan:
    """The pf NAT option for the CE's port set: exact for every TCP/UDP port set."""
    ps = p.port_set
    if not ps.restricted:
        return NatPlan("plain", "")
    if ps.offset >= 1:
        return NatPlan("map-e-portset", f"map-e-portset {ps.offset}/{ps.psid_len}/{ps.psid}")
    ranges = ps.ranges()  # a = 0: one contiguous range, port 0 excluded
    if not ranges:  # a = 0, k = 16, PSID 0: the only port would be 0
        raise CannotRender(Unsupported(
            "empty-port-set", "PSID offset 0, PSID length 16, PSID 0 leaves no usable port (port 0 is never used)"))
    ((lo, hi),) = ranges
    return NatPlan("port-range", f"port {lo}" if lo == hi else f"port {lo}:{hi}")


def limitations(p: MapeParams) -> tuple[Unsupported, ...]:
    """What a correct OpenBSD rendering of these parameters still cannot do."""
    out: list[Unsupported] = []
    plan = nat_plan(p)
    if plan.method == "port-range":
        out.append(Unsupported(
            "icmp-echo-ids-in-set",
            "pf widens ICMP echo ids to 1-65535 for nat-to without map-e-portset (pf_lb.c "
            "pf_get_sport); with PSID offset 0 the port set needs 'port lo:hi', so echo ids "
            "are not confined to it",
        ))
    if p.rule.forwarding:
        out.append(Unsupported(
            "forwarding-mapping-rule",
            "gif(4) has one fixed tunnel destination; a forwarding rule (F flag) needs the "
            "destination CE's MAP address per packet from the IPv4 destination and port "
            "(RFC 7597 §7.2), so CE-to-CE traffic goes through the BR (hub and spoke)",
        ))
    return tuple(out)


@dataclass(frozen=True)
class CeConfig:
    """Everything rendered for one CE; every text ends with a newline."""

    params: MapeParams
    site: Site
    nat: NatPlan
    anchor_text: str
    apply: tuple[Command, ...]
    withdraw: tuple[Command, ...]
    limitations: tuple[Unsupported, ...] = field(default=())

    @property
    def tunnel_mtu(self) -> int:
        return self.site.wan_mtu - IPV6_HEADER

    @property
    def mss(self) -> int:
        return self.tunnel_mtu - TCP_IPV4_HEADERS

    def apply_script(self) -> str:
        return "".join(c.shell() + "\n" for c in self.apply)

    def withdraw_script(self) -> str:
        return "".join(c.shell() + "\n" for c in self.withdraw)

    def unsupported(self, what: str) -> Unsupported | None:
        """The limitation named ``what``, or None when this configuration can do it."""
        return next((u for u in self.limitations if u.what == what), None)


def _anchor(p: MapeParams, site: Site, plan: NatPlan, br: str) -> str:
    gif, wan = site.gif_if, site.wan_if
    lines = [
        f"match on {gif} inet proto tcp scrub (max-mss {site.wan_mtu - IPV6_HEADER - TCP_IPV4_HEADERS})",
        plan.rule(gif, f"({gif})"),
        *(plan.rule(gif, str(net)) for net in site.lan_networks),
        f"pass out quick on {wan} inet6 proto ipencap from {p.map_address} to {br}",
        f"pass in quick on {wan} inet6 proto ipencap from {br} to {p.map_address}",
        f"pass out quick on {gif} inet from ({gif}) keep state",
    ]
    return "\n".join(lines) + "\n"


def _build(p: MapeParams, site: Site, br: str) -> CeConfig:
    if not isinstance(site.lan_networks, tuple) or not all(isinstance(n, IPv4Network) for n in site.lan_networks):
        raise ValueError("Site.lan_networks: a tuple of IPv4Network")
    plan = nat_plan(p)
    anchor = _anchor(p, site, plan, br)
    gif, wan, peer = site.gif_if, site.wan_if, str(site.peer_ipv4)
    mapaddr = str(p.map_address)
    apply = (
        Command(("ifconfig", wan, "inet6", mapaddr, "prefixlen", "128", "alias")),
        Command(("ifconfig", gif, "create")),
        Command(("ifconfig", gif, "tunnel", mapaddr, br)),
        Command(("ifconfig", gif, "inet", str(p.ipv4), peer, "netmask", "255.255.255.255")),
        Command(("ifconfig", gif, "mtu", str(site.wan_mtu - IPV6_HEADER))),
        Command(("ifconfig", gif, "up")),
        Command(("route", "-n", "add", "-inet", "default", peer)),
        Command(("pfctl", "-a", site.anchor, "-f", "-"), stdin=anchor),
    )
    withdraw = (
        Command(("pfctl", "-a", site.anchor, "-F", "rules")),
        Command(("route", "-n", "delete", "-inet", "default", peer)),
        Command(("ifconfig", gif, "destroy")),
        Command(("ifconfig", wan, "inet6", mapaddr, "delete")),
    )
    return CeConfig(p, site, plan, anchor, apply, withdraw, limitations(p))


def render(p: MapeParams, site: Site) -> CeConfig:
    """Commands, anchor and limitations for ``p`` on ``site``; :class:`CannotRender` if impossible."""
    if p.br is None:
        raise CannotRender(Unsupported("no-br", "no BR address: the gif(4) tunnel needs a destination"))
    return _build(p, site, str(p.br))


# -- persistent files ---------------------------------------------------------------------

def hostname_gif(cfg: CeConfig) -> str:
    """/etc/hostname.<gif>: the same commands as :attr:`CeConfig.apply`, as ``!`` lines.

    hostname.if(5) runs ``!`` lines with ``$if`` replaced by the interface name in every
    revision; using only them keeps the file's meaning independent of netstart's parser.
    The MAP address, IPv4 address and BR come from the current lease: the file is right only
    while the delegated prefix stays the same.
    """
    p, site = cfg.params, cfg.site
    return (
        f"!ifconfig {site.wan_if} inet6 {p.map_address} prefixlen 128 alias\n"
        f"!ifconfig \\$if tunnel {p.map_address} {p.br}\n"
        f"!ifconfig \\$if inet {p.ipv4} {site.peer_ipv4} netmask 255.255.255.255\n"
        f"!ifconfig \\$if mtu {cfg.tunnel_mtu}\n"
        "up\n"
        f"!route -qn add -inet default {site.peer_ipv4}\n"
    )


def pf_conf_hook(anchor: str = "mape", path: str | None = None) -> str:
    """The lines /etc/pf.conf needs so the anchor's rules are evaluated (and loaded at boot)."""
    path = path or f"/etc/pf.anchors/{anchor}"
    return f'anchor "{anchor}"\nload anchor "{anchor}" from "{path}"\n'


def dhcp6leased_conf(wan_if: str, lan_ifs: Sequence[str], *, request_mape: bool) -> str:
    """/etc/dhcp6leased.conf: prefix delegation for the LAN interfaces, and MAP-E on request.

    Grammar of sbin/dhcp6leased/parse.y (``request prefix delegation on IF for { IF/len }``)
    and of the published dhcp6leased patch (``request mape on IF``, its own line).
    """
    lans = " ".join(f"{lan}/64" for lan in lan_ifs)
    text = f"request prefix delegation on {wan_if} for {{ {lans} }}\n"
    if request_mape:
        text += f"request mape on {wan_if}\n"
    return text


def calc_lines(p: MapeParams, wan_mtu: int | None = None, wan_if: str = "<wan>") -> list[str]:
    """The calculator's "OpenBSD CE:" section: the commands, a LAN hint, then the limitations.

    Without a BR the tunnel lines say ``<BR>``: the calculator shows what it can.
    """
    site = Site(wan_if=wan_if, wan_mtu=wan_mtu or 1500)
    cfg = _build(p, site, str(p.br) if p.br is not None else "<BR>")
    lan_rule = cfg.nat.rule(site.gif_if, "<lan-network>")
    return (cfg.apply_script().splitlines()
            + [f"# for each LAN network, add to the anchor: {lan_rule}"]
            + [f"# {u}" for u in cfg.limitations])
