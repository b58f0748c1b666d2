"""Parsers for what an OpenBSD CE prints: the state the e2e suite reads back over SSH.

Each parser follows the printing code it names (revisions as stored in the openbsd/src index
and in the published patches; recorded beside each parser).  They are strict about the lines
they rely on and lenient about the rest: a line they do not know is kept in ``extra``, and a
line that looks like something they rely on but cannot be read is reported in ``problems``
(line number, the line, why), never silently dropped.  Nothing here runs a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from mapelab.mape import MapeParams, PortParams, Rule, derive


@dataclass(frozen=True)
class Problem:
    line_no: int  # 1-based
    line: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}: {self.line!r}"


def _lines(text: str) -> list[tuple[int, str]]:
    return [(i, ln.rstrip("\n")) for i, ln in enumerate(text.splitlines(), 1)]


# == ifconfig ==============================================================================
# sbin/ifconfig/ifconfig.c (header "%s: flags=%x<...>" and " mtu %d", "\tlladdr", "\tindex",
# "\tgroups:", "\tinet ... netmask 0x%x", "\tinet6 ... prefixlen %d", "\ttunnel: inet6 A --> B
# ttl N ..."), as printed by a real OpenBSD 7.9 router in the published README of
# atmosx/openbsd-mape-ce (gif0 block) and ifconfig.8 1.408 (2025/11/02) for the parameters.

_IF_HEADER = re.compile(r"^(?P<name>[a-z][a-z0-9]*[0-9]+): flags=(?P<hex>[0-9a-f]+)<(?P<flags>[A-Z0-9_,]*)>"
                        r"(?: mtu (?P<mtu>\d+))?\s*$")


@dataclass(frozen=True)
class Inet4:
    address: IPv4Address
    prefixlen: int
    dest: IPv4Address | None = None
    broadcast: IPv4Address | None = None


@dataclass(frozen=True)
class Inet6:
    address: IPv6Address
    prefixlen: int
    scope: str | None = None  # the %zone of a link-local address
    dest: IPv6Address | None = None
    flags: tuple[str, ...] = ()  # autoconf, tentative, deprecated, temporary, ...


@dataclass(frozen=True)
class Tunnel:
    family: str  # "inet" or "inet6"
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    options: tuple[str, ...] = ()  # e.g. ("ttl", "64", "nodf", "ecn")


@dataclass
class Interface:
    name: str
    flags: tuple[str, ...]
    flags_value: int
    mtu: int | None
    lladdr: str | None = None
    index: int | None = None
    groups: tuple[str, ...] = ()
    status: str | None = None
    inet: list[Inet4] = field(default_factory=list)
    inet6: list[Inet6] = field(default_factory=list)
    tunnel: Tunnel | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return "UP" in self.flags


@dataclass
class IfconfigOutput:
    interfaces: dict[str, Interface]
    problems: list[Problem]


def _netmask_len(text: str) -> int:
    value = int(text, 16) if text.startswith("0x") else int(IPv4Address(text))
    bits = bin(value)[2:].zfill(32)
    if "01" in bits:
        raise ValueError(f"non-contiguous netmask {text}")
    return bits.count("1")


def _inet(words: list[str]) -> Inet4:
    address = IPv4Address(words[0])
    dest = bcast = None
    plen = 32
    i = 1
    while i < len(words):
        w = words[i]
        if w == "-->":
            dest = IPv4Address(words[i + 1])
            i += 2
        elif w == "netmask":
            plen = _netmask_len(words[i + 1])
            i += 2
        elif w == "broadcast":
            bcast = IPv4Address(words[i + 1])
            i += 2
        else:
            raise ValueError(f"unexpected {w!r}")
    return Inet4(address, plen, dest, bcast)


_INET6_FLAGS = {"anycast", "tentative", "duplicated", "detached", "deprecated", "autoconf", "temporary"}


def _inet6(words: list[str]) -> Inet6:
    addr, _, scope = words[0].partition("%")
    dest = None
    plen: int | None = None
    flags: list[str] = []
    i = 1
    while i < len(words):
        w = words[i]
        if w == "-->":
            dest = IPv6Address(words[i + 1].partition("%")[0])
            i += 2
        elif w == "prefixlen":
            plen = int(words[i + 1])
            i += 2
        elif w in ("scopeid", "pltime", "vltime"):
            i += 2
        elif w in _INET6_FLAGS:
            flags.append(w)
            i += 1
        else:
            raise ValueError(f"unexpected {w!r}")
    if plen is None:
        raise ValueError("no prefixlen")
    return Inet6(IPv6Address(addr), plen, scope or None, dest, tuple(flags))


def _tunnel(words: list[str]) -> Tunnel:
    if len(words) < 4 or words[0] not in ("inet", "inet6") or words[2] != "-->":
        raise ValueError("expected 'tunnel: inet6 SRC --> DST ...'")
    src, dst = ip_address(words[1].partition("%")[0]), ip_address(words[3].partition("%")[0])
    return Tunnel(words[0], src, dst, tuple(words[4:]))


def parse_ifconfig(text: str) -> IfconfigOutput:
    """``ifconfig`` or ``ifconfig -A`` (all interfaces) or ``ifconfig IF`` (one)."""
    out = IfconfigOutput({}, [])
    cur: Interface | None = None
    for no, line in _lines(text):
        if not line.strip():
            continue
        if not line[0].isspace():
            m = _IF_HEADER.match(line)
            if not m:
                out.problems.append(Problem(no, line, "not an interface header"))
                cur = None
                continue
            flags = tuple(f for f in m["flags"].split(",") if f)
            cur = Interface(m["name"], flags, int(m["hex"], 16), int(m["mtu"]) if m["mtu"] else None)
            out.interfaces[cur.name] = cur
            continue
        if cur is None:
            out.problems.append(Problem(no, line, "detail line before any interface header"))
            continue
        body = line.strip()
        key, _, rest = body.partition(" ")
        words = rest.split()
        try:
            if key == "inet":
                cur.inet.append(_inet(words))
            elif key == "inet6":
                cur.inet6.append(_inet6(words))
            elif key == "tunnel:":
                cur.tunnel = _tunnel(words)
            elif key == "lladdr":
                cur.lladdr = words[0]
            elif key == "index":
                cur.index = int(words[0])
            elif key == "groups:":
                cur.groups = tuple(words)
            elif key == "status:":
                cur.status = rest
            else:
                cur.extra.append(body)
        except (ValueError, IndexError) as e:
            out.problems.append(Problem(no, line, f"unreadable {key.rstrip(':')} line ({e})"))
    return out


# == netstat -rn / route -n show ============================================================
# sbin/route/show.c 1.123 (2025/07/10): pr_family() prints "\nInternet:" / "\nInternet6:",
# pr_rthdr() "Destination Gateway Flags Refs Use Mtu Prio Iface", p_rtentry() one route per
# line: dest, gateway, flags, refs, use, mtu or "-", an "L" when the MTU is locked, prio, iface
# (and a label with -v).  netname4() abbreviates networks ("192.168.1/24", "10/8") and names
# the zero route "default".  netstat -rn prints the same columns.

@dataclass(frozen=True)
class Route:
    family: str  # "inet" or "inet6"
    destination: str  # as printed
    network: IPv4Network | IPv6Network | None  # None for link-layer or unreadable destinations
    gateway: str
    flags: str
    refs: int
    use: int
    mtu: int | None
    priority: int
    interface: str
    label: str | None = None

    @property
    def is_default(self) -> bool:
        return self.destination == "default"


@dataclass
class RouteTable:
    routes: list[Route]
    problems: list[Problem]

    def default(self, family: str = "inet") -> list[Route]:
        return [r for r in self.routes if r.family == family and r.is_default]


def _route_dest(family: str, text: str) -> IPv4Network | IPv6Network | None:
    if text == "default":
        return IPv4Network("0.0.0.0/0") if family == "inet" else IPv6Network("::/0")
    addr, _, plen = text.partition("/")
    addr = addr.partition("%")[0]
    try:
        if family == "inet":
            octets = addr.split(".")
            if not 1 <= len(octets) <= 4:
                return None
            full = ".".join(octets + ["0"] * (4 - len(octets)))
            return IPv4Network(f"{full}/{plen or 32}", strict=False)
        return IPv6Network(f"{addr}/{plen or 128}", strict=False)
    except ValueError:
        return None


def parse_routes(text: str) -> RouteTable:
    """``netstat -rn`` or ``route -n show`` (both families, or one with -inet/-inet6)."""
    table = RouteTable([], [])
    family: str | None = None
    for no, line in _lines(text):
        s = line.strip()
        if not s or s == "Routing tables":
            continue
        if s in ("Internet:", "Internet6:"):
            family = "inet" if s == "Internet:" else "inet6"
            continue
        if (s.endswith(":") and " " not in s.rstrip(":")) or s.startswith("Protocol Family"):
            family = None  # Encap:, MPLS:, ... sections we do not read
            continue
        if s.startswith("Destination"):
            continue
        if family is None:
            table.problems.append(Problem(no, line, "route line outside an Internet/Internet6 section"))
            continue
        w = s.split()
        locked = len(w) > 6 and w[6] == "L"
        if locked:
            del w[6]
        try:
            if len(w) < 8:
                raise ValueError("fewer than 8 columns")
            route = Route(
                family=family, destination=w[0], network=_route_dest(family, w[0]), gateway=w[1],
                flags=w[2], refs=int(w[3]), use=int(w[4]), mtu=None if w[5] == "-" else int(w[5]),
                priority=int(w[6]), interface=w[7], label=" ".join(w[8:]) or None,
            )
        except ValueError as e:
            table.problems.append(Problem(no, line, f"unreadable route ({e})"))
            continue
        table.routes.append(route)
    return table


# == pfctl -sr -v ===========================================================================
# sbin/pfctl/pfctl_parser.c 1.352 (2024/11/12) print_rule()/print_pool() for the rule text
# (" nat-to (gif0) round-robin", " port %u:%u", and mape79's " map-e-portset %u/%u/%u"), and
# sbin/pfctl/pfctl.c 1.397 (2025/05/26) pfctl_print_rule_counters(): with -v
# "  [ Evaluations: %-8llu  Packets: %-8llu  Bytes: %-10llu  States: %-6u]" and
# "  [ Inserted: uid %lu pid %lu State Creations: %-6u]".  With -vv a rule starts "@N ".

_EVAL = re.compile(r"^\s+\[ Evaluations: (\d+)\s+Packets: (\d+)\s+Bytes: (\d+)\s+States: (\d+)\s*\]$")
_INSERTED = re.compile(r"^\s+\[ Inserted: uid (\d+) pid (\d+) State Creations: (\d+)\s*\]$")
_PORTSET = re.compile(r"\bmap-e-portset (\d+)/(\d+)/(\d+)\b")
_NATPORT = re.compile(r"\bnat-to \S+(?: \S+)*? port (\d+)(?::(\d+))?")


@dataclass
class PfRule:
    text: str
    number: int | None = None
    evaluations: int | None = None
    packets: int | None = None
    bytes: int | None = None
    states: int | None = None
    inserted_uid: int | None = None
    inserted_pid: int | None = None
    state_creations: int | None = None

    @property
    def map_e_portset(self) -> tuple[int, int, int] | None:
        m = _PORTSET.search(self.text)
        return (int(m[1]), int(m[2]), int(m[3])) if m else None

    @property
    def nat_port_range(self) -> tuple[int, int] | None:
        """``port lo:hi`` (or ``port N``) of a nat-to, when the rule has one."""
        m = _NATPORT.search(self.text)
        if not m:
            return None
        lo = int(m[1])
        return lo, int(m[2]) if m[2] else lo


@dataclass
class PfRules:
    rules: list[PfRule]
    problems: list[Problem]
    extra: list[str] = field(default_factory=list)


def parse_pf_rules(text: str) -> PfRules:
    """``pfctl [-a anchor] -sr [-v|-vv]``: rules in order, with their counters when printed."""
    out = PfRules([], [])
    for no, line in _lines(text):
        if not line.strip():
            continue
        if not line[0].isspace():
            number = None
            m = re.match(r"^@(\d+) (.*)$", line)
            if m:
                number, line = int(m[1]), m[2]
            out.rules.append(PfRule(line, number))
            continue
        body = line.strip()
        if body.startswith("[ Evaluations:") or body.startswith("[ Inserted:"):
            if not out.rules:
                out.problems.append(Problem(no, line, "counters before any rule"))
                continue
            rule = out.rules[-1]
            if (m := _EVAL.match(line)) is not None:
                rule.evaluations, rule.packets, rule.bytes, rule.states = (int(x) for x in m.groups())
            elif (m := _INSERTED.match(line)) is not None:
                rule.inserted_uid, rule.inserted_pid, rule.state_creations = (int(x) for x in m.groups())
            else:
                out.problems.append(Problem(no, line, "unreadable rule counters"))
            continue
        out.extra.append(body)  # -vv skip steps and queue lines
    return out


# == pfctl -ss ==============================================================================
# sbin/pfctl/pf_print_state.c 1.59 (2011/10/13) print_state(): "%s %s " interface and protocol,
# then the wire key's addr[1] and, when the stack key differs, " (" stack addr ")", then " -> "
# (outbound state) or " <- " (inbound), the other end likewise, four spaces and "   %s:%s"
# (TCP/UDP state names, or numbers for ICMP).  print_host(): IPv4 "a.b.c.d:port", IPv6
# "addr[port]", "(rdomain) " before it.  For an outbound NAT state the first address is the
# translated source on the wire; the one in parentheses is the original (LAN) source.

_HOST = r"(?:\(\d+\) )?[0-9A-Fa-f:.]+(?::\d+|\[\d+\])?"
_STATE = re.compile(
    rf"^(?P<if>\S+) (?P<proto>\S+) (?P<a>{_HOST})(?: \((?P<a0>{_HOST})\))? (?P<dir>->|<-) "
    rf"(?P<b>{_HOST})(?: \((?P<b0>{_HOST})\))?\s+(?P<st>\S+)$"
)


@dataclass(frozen=True)
class Endpoint:
    address: IPv4Address | IPv6Address
    port: int | None  # port, or ICMP id
    rdomain: int | None = None


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return port


def _endpoint(text: str) -> Endpoint:
    rdomain = None
    m = re.match(r"^\((\d+)\) (.*)$", text)
    if m:
        rdomain, text = int(m[1]), m[2]
    if text.endswith("]"):
        addr, _, port = text[:-1].partition("[")
        return Endpoint(IPv6Address(addr), _port(port), rdomain)
    if text.count(":") == 1:
        addr, _, port = text.partition(":")
        return Endpoint(IPv4Address(addr), _port(port), rdomain)
    return Endpoint(ip_address(text), None, rdomain)


@dataclass(frozen=True)
class PfState:
    interface: str
    proto: str
    direction: str  # "out" ("->") or "in" ("<-")
    first: Endpoint  # the wire key's addr[1]: for an outbound state, the source as sent
    first_orig: Endpoint | None  # the stack key's address when NAT changed it
    second: Endpoint
    second_orig: Endpoint | None
    state: str

    @property
    def translated(self) -> bool:
        return self.first_orig is not None or self.second_orig is not None

    @property
    def nat_source(self) -> Endpoint | None:
        """The translated source (address, port or ICMP id) of an outbound NAT state."""
        return self.first if self.direction == "out" and self.first_orig is not None else None


@dataclass
class PfStates:
    states: list[PfState]
    problems: list[Problem]


def parse_pf_states(text: str) -> PfStates:
    """``pfctl -ss`` (with -v the indented detail lines are skipped)."""
    out = PfStates([], [])
    for no, line in _lines(text):
        if not line.strip() or line[0].isspace():
            continue
        m = _STATE.match(line)
        if not m:
            out.problems.append(Problem(no, line, "unreadable state"))
            continue
        try:
            state = PfState(
                m["if"], m["proto"], "out" if m["dir"] == "->" else "in",
                _endpoint(m["a"]), _endpoint(m["a0"]) if m["a0"] else None,
                _endpoint(m["b"]), _endpoint(m["b0"]) if m["b0"] else None, m["st"],
            )
        except ValueError as e:
            out.problems.append(Problem(no, line, f"unreadable address in state ({e})"))
            continue
        out.states.append(state)
    return out


# == pfctl -si ==============================================================================
# sbin/pfctl/pfctl_parser.c 1.352 print_status(): "Status: Enabled for %lld days %.2u:%.2u:%.2u"
# padded to 44 columns, then "Debug: %s"; with -v "Hostid:   0x%08x" and "Checksum: 0x%s";
# "Interface Stats for IF  IPv4  IPv6" when a loginterface is set; "State Table  Total  Rate"
# with "  %-25s %14u" / "  %-25s %14llu %14.1f/s" lines; with -v "Source Tracking Table",
# "Fragments", "Limit Counters", "Adaptive Syncookies Watermarks"; always "Counters".

_STATUS = re.compile(r"^Status: (?P<st>Enabled|Disabled)(?: for (?P<d>\d+) days (?P<h>\d+):(?P<m>\d+):(?P<s>\d+))?"
                     r"\s*(?:Debug: (?P<debug>\S+))?\s*$")
_COUNTER = re.compile(r"^\s{2,}(?P<name>\S.*?)\s+(?P<total>\d+)(?:\s+(?P<rate>[\d.]+)/s|\s+(?P<unit>states))?\s*$")
_IFSTAT = re.compile(r"^\s{2,}(?P<name>\S.*?)\s+(?P<v4>\d+)\s+(?P<v6>\d+)\s*$")


@dataclass
class PfStatus:
    enabled: bool
    running_seconds: int | None
    debug: str | None
    hostid: str | None = None
    checksum: str | None = None
    sections: dict[str, dict[str, int]] = field(default_factory=dict)
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def counter(self, section: str, name: str) -> int:
        return self.sections[section][name]


def parse_pf_status(text: str) -> PfStatus:
    """``pfctl -si`` or ``pfctl -vsi``."""
    lines = _lines(text)
    first = next(((no, ln) for no, ln in lines if ln.strip()), (1, ""))
    m = _STATUS.match(first[1])
    if not m:
        st = PfStatus(False, None, None)
        st.problems.append(Problem(first[0], first[1], "no 'Status:' line"))
        return st
    secs = None
    if m["d"] is not None:
        secs = ((int(m["d"]) * 24 + int(m["h"])) * 60 + int(m["m"])) * 60 + int(m["s"])
    st = PfStatus(m["st"] == "Enabled", secs, m["debug"])
    section: str | None = None
    for no, line in lines:
        if no <= first[0] or not line.strip():
            continue
        if line.startswith("Hostid:"):
            st.hostid = line.split()[-1]
            continue
        if line.startswith("Checksum:"):
            st.checksum = line.split()[-1]
            continue
        if not line[0].isspace():
            section = line.split("  ")[0].strip()
            if section.startswith("Interface Stats for"):
                section = "Interface Stats"
            st.sections.setdefault(section, {})
            continue
        if section is None:
            st.problems.append(Problem(no, line, "counter outside a section"))
            continue
        if section == "Interface Stats":
            if (mi := _IFSTAT.match(line)) is not None:
                st.sections[section][mi["name"] + " (IPv4)"] = int(mi["v4"])
                st.sections[section][mi["name"] + " (IPv6)"] = int(mi["v6"])
            # "  Packets In" / "  Packets Out" sub-headers carry no numbers
            continue
        mc = _COUNTER.match(line)
        if not mc:
            st.problems.append(Problem(no, line, f"unreadable counter in {section}"))
            continue
        st.sections[section][mc["name"]] = int(mc["total"])
        if mc["rate"] is not None:
            st.rates.setdefault(section, {})[mc["name"]] = float(mc["rate"])
    return st


# == dhcp6leasectl -l and the lease file ====================================================
# usr.sbin/dhcp6leasectl/dhcp6leasectl.c 1.6 (2024/11/21) show_interface_msg(): "%s [%s]",
# "\tIA_PD %d: %s/%d", "\tlease %lld day(s)|hour(s)|minute(s)|second(s)" (rounded).  The
# published dhcp6leased MAP-E patch for 7.9 (patch/dhcp6leased-mape-softwire46-openbsd79.patch
# and src/usr.sbin/dhcp6leasectl/dhcp6leasectl.c of atmosx/openbsd-mape-ce) adds
# show_mape_msg(): "\tMAP-E", "\t\tBR: %s", "\t\trule: flags %u ea-len %u %s/%u %s/%u",
# "\t\tportparams: offset %u psid-len %u psid %u" (PSID right-aligned), and a later revision
# adds -m: "\tlease-seconds: %lld".  While it waits for a lease it prints dots first.
# The lease file (/var/db/dhcp6leased/IF, dhcp6leased.c write_lease_file()): "ia_pd %d %s %d",
# and with the patch "mape_br %s", "mape_rule %u %u %s %u %s %u", "mape_portparams %u %u %u".

@dataclass(frozen=True)
class MapeRuleLease:
    flags: int
    ea_len: int
    ipv4_prefix: IPv4Network
    ipv6_prefix: IPv6Network
    portparams: tuple[int, int, int] | None = None  # (offset, psid-len, psid)

    def to_rule(self) -> Rule:
        """The model's Rule (F is the flags octet's least significant bit, RFC 7598 §4.1)."""
        pp = PortParams(*self.portparams) if self.portparams else None
        return Rule(self.ipv6_prefix, self.ipv4_prefix, self.ea_len, pp,
                    forwarding=bool(self.flags & 1), reserved_flags=self.flags >> 1)


@dataclass(frozen=True)
class MapeLease:
    br: IPv6Address | None
    rules: tuple[MapeRuleLease, ...]


@dataclass
class Dhcp6Lease:
    interface: str | None
    state: str | None
    prefixes: dict[int, IPv6Network] = field(default_factory=dict)
    lease: str | None = None  # "7 days", as rounded by dhcp6leasectl
    lease_seconds: int | None = None  # only with the patched -m
    mape: MapeLease | None = None
    problems: list[Problem] = field(default_factory=list)

    def derive(self, ia: int = 0) -> MapeParams:
        """What a CE derives from this lease (MapeError when the lease cannot give it)."""
        if self.mape is None or not self.mape.rules:
            raise ValueError("the lease has no MAP-E rules")
        if ia not in self.prefixes:
            raise ValueError(f"the lease has no IA_PD {ia}")
        return derive(tuple(r.to_rule() for r in self.mape.rules), self.prefixes[ia], self.mape.br)


def _net4(addr: str, plen: str) -> IPv4Network:
    return IPv4Network(f"{addr}/{plen}")


def _net6(addr: str, plen: str) -> IPv6Network:
    return IPv6Network(f"{addr}/{plen}")


_CTL_HEADER = re.compile(r"^\.*(?P<if>\S+) \[(?P<state>[^\]]+)\]$")
_CTL_IAPD = re.compile(r"^IA_PD (\d+): ([0-9a-fA-F:]+)/(\d+)$")
_CTL_RULE = re.compile(r"^rule: flags (\d+) ea-len (\d+) ([0-9.]+)/(\d+) ([0-9a-fA-F:]+)/(\d+)$")
_CTL_PP = re.compile(r"^portparams: offset (\d+) psid-len (\d+) psid (\d+)$")


def _mape_line(kind: str, m: re.Match[str], br: list[IPv6Address], rules: list[MapeRuleLease]) -> None:
    if kind == "br":
        br.append(IPv6Address(m[1]))
    elif kind == "rule":
        rules.append(MapeRuleLease(int(m[1]), int(m[2]), _net4(m[3], m[4]), _net6(m[5], m[6])))
    else:
        if not rules:
            raise ValueError("port parameters before any rule")
        last = rules[-1]
        rules[-1] = MapeRuleLease(last.flags, last.ea_len, last.ipv4_prefix, last.ipv6_prefix,
                                  (int(m[1]), int(m[2]), int(m[3])))


def parse_dhcp6leasectl(text: str) -> Dhcp6Lease:
    """``dhcp6leasectl -l IF`` (stock or patched, with or without -m)."""
    lease = Dhcp6Lease(None, None)
    brs: list[IPv6Address] = []
    rules: list[MapeRuleLease] = []
    in_mape = False
    for no, line in _lines(text):
        s = line.strip()
        if not s or set(s) == {"."}:
            continue
        try:
            if not line[0].isspace():
                m = _CTL_HEADER.match(line)
                if not m:
                    raise ValueError("not an 'IF [State]' header")
                lease.interface, lease.state = m["if"], m["state"]
            elif (m := _CTL_IAPD.match(s)) is not None:
                lease.prefixes[int(m[1])] = _net6(m[2], m[3])
            elif s.startswith("lease-seconds:"):
                lease.lease_seconds = int(s.split()[1])
            elif s.startswith("lease "):
                lease.lease = s[len("lease "):]
            elif s == "MAP-E":
                in_mape = True
            elif in_mape and s.startswith("BR:"):
                _mape_line("br", re.match(r"^BR: ([0-9a-fA-F:]+)$", s) or _bad(), brs, rules)
            elif in_mape and s.startswith("rule:"):
                _mape_line("rule", _CTL_RULE.match(s) or _bad(), brs, rules)
            elif in_mape and s.startswith("portparams:"):
                _mape_line("pp", _CTL_PP.match(s) or _bad(), brs, rules)
            else:
                raise ValueError("unknown line")
        except ValueError as e:
            lease.problems.append(Problem(no, line, str(e)))
    if in_mape:
        lease.mape = MapeLease(brs[0] if brs else None, tuple(rules))
    return lease


def _bad() -> re.Match[str]:
    raise ValueError("does not match the printed format")


def parse_lease_file(text: str) -> Dhcp6Lease:
    """/var/db/dhcp6leased/IF as written by dhcp6leased (and by the MAP-E patch)."""
    lease = Dhcp6Lease(None, None)
    brs: list[IPv6Address] = []
    rules: list[MapeRuleLease] = []
    for no, line in _lines(text):
        w = line.split()
        if not w:
            continue
        try:
            if w[0] == "ia_pd" and len(w) == 4:
                lease.prefixes[int(w[1])] = _net6(w[2], w[3])
            elif w[0] == "mape_br" and len(w) == 2:
                _mape_line("br", re.match(r"^(.*)$", w[1]) or _bad(), brs, rules)
            elif w[0] == "mape_rule" and len(w) == 7:
                m = re.match(r"^(\d+) (\d+) (\S+) (\d+) (\S+) (\d+)$", " ".join(w[1:])) or _bad()
                _mape_line("rule", m, brs, rules)
            elif w[0] == "mape_portparams" and len(w) == 4:
                m = re.match(r"^(\d+) (\d+) (\d+)$", " ".join(w[1:])) or _bad()
                _mape_line("pp", m, brs, rules)
            else:
                raise ValueError("unknown lease line")
        except ValueError as e:
            lease.problems.append(Problem(no, line, str(e)))
    if brs or rules:
        lease.mape = MapeLease(brs[0] if brs else None, tuple(rules))
    return lease
