"""The MAP-E calculator: what a router admin types instead of OpenWrt's mapcalc.

Inputs come from command-line values, a scenario file or a raw option 94 captured off the
wire; the output is one :class:`MapeParams` rendered for people or as JSON.  All parsing of
user text happens here (not in ``mape``), and every bad value becomes a :class:`CalcError`
whose one-line message names the value and what would be accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from typing import Any

from . import scenario as scenario_mod
from .errors import InputError
from .mape import CodecError, MapeError, MapeParams, PortParams, Rule, decode_option94, derive, validate_container
from .openbsd import ceconf


class CalcError(InputError):
    """One line for the user: the bad input, and what to type instead."""


@dataclass
class CalcInput:
    rule_ipv6: str | None = None
    rule_ipv4: str | None = None
    ea_len: int | str | None = None
    offset: int | str | None = None
    psid_len: int | str | None = None
    psid: int | str | None = None
    psid_wire: int | str | None = None
    prefix: str | None = None
    br: str | None = None
    scenario: str | None = None
    option94: str | None = None


@dataclass(frozen=True)
class Calculation:
    """What the calculator derived, and the WAN MTU when a scenario gave one (for the gif MTU)."""

    params: MapeParams
    wan_mtu: int | None = None


def _parse(text: str, cls: type, option: str, example: str) -> Any:
    try:
        return cls(text.strip())
    except ValueError as e:
        raise CalcError(f"{option} {text!r}: {e}; expected something like {example}") from None


def _int(text: str | int, option: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text), 0)
    except ValueError:
        raise CalcError(f"{option} {text!r}: not an integer (decimal or 0x… hex)") from None


def _hex(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    cleaned = cleaned.removeprefix("0x")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise CalcError(f"--option94 {text!r}: not hex bytes (e.g. 005e002d0059…)") from None


def psid_from_wire(wire: int, psid_len: int) -> int:
    """The right-aligned PSID from OPTION_S46_PORTPARAMS' 16-bit PSID field, which is LEFT-aligned
    (RFC 7598 §4.5; OpenWrt's mapcalc ``psid=`` takes that field).  Bits below the PSID must be zero:
    anything else means the PSID length or the value is not what the user thinks."""
    if not 0 <= wire <= 0xFFFF:
        raise CalcError(f"--psid-wire {wire:#x}: the option 93 PSID field is 16 bits (0..0xffff)")
    if psid_len == 0:
        raise CalcError("--psid-wire needs --psid-len K (K > 0): the left-aligned field means nothing without it")
    shift = 16 - psid_len
    if wire & ((1 << shift) - 1):
        raise CalcError(
            f"--psid-wire {wire:#06x}: its low {shift} bits are not zero, so it is not a left-aligned {psid_len}-bit "
            f"PSID; check --psid-len, or give the right-aligned value with --psid")
    return wire >> shift


def psid_to_wire(psid: int, psid_len: int) -> int:
    """The inverse of :func:`psid_from_wire`: what option 93 (and mapcalc's ``psid=``) carries."""
    return psid << (16 - psid_len) if psid_len else 0


def _rule_from_options(args: CalcInput) -> Rule:
    """A rule from --rule-ipv6/--rule-ipv4/--ea-len and the port options, each value checked first."""
    ipv6 = _parse(args.rule_ipv6, IPv6Network, "--rule-ipv6", "2001:db8::/40") if args.rule_ipv6 else None
    ipv4 = _parse(args.rule_ipv4, IPv4Network, "--rule-ipv4", "192.0.2.0/24") if args.rule_ipv4 else None
    ea_len = _int(args.ea_len, "--ea-len") if args.ea_len is not None else None
    offset = _int(args.offset, "--offset") if args.offset is not None else None
    psid_len = _int(args.psid_len, "--psid-len") if args.psid_len is not None else None
    psid = _int(args.psid, "--psid") if args.psid is not None else None
    wire = _int(args.psid_wire, "--psid-wire") if args.psid_wire is not None else None
    if psid is not None and wire is not None:
        raise CalcError("give --psid (right-aligned, e.g. 0x34) or --psid-wire (option 93's left-aligned field, "
                        "e.g. 0x3400, what mapcalc's psid= takes), not both")
    if wire is not None:
        psid = psid_from_wire(wire, psid_len or 0)
    if ipv6 is None or ipv4 is None or ea_len is None:
        raise CalcError("need --rule-ipv6, --rule-ipv4 and --ea-len (or --scenario NAME, or --option94 HEX)")
    pp = None
    if offset is not None or psid_len is not None or psid is not None:
        pp = PortParams(offset=6 if offset is None else offset, psid_len=psid_len or 0, psid=psid or 0)
    return Rule(ipv6_prefix=ipv6, ipv4_prefix=ipv4, ea_len=ea_len, portparams=pp)


def calculate(args: CalcInput) -> Calculation:
    """Resolve the inputs to rules, BR and delegated prefix, then derive."""
    rules: tuple[Rule, ...] = ()
    brs: tuple[IPv6Address, ...] = ()
    prefix: IPv6Network | None = None
    wan_mtu: int | None = None
    sources = [x for x in ("scenario", "option94") if getattr(args, x)]
    rule_options = ("rule_ipv6", "rule_ipv4", "ea_len", "offset", "psid_len", "psid", "psid_wire")
    given = ["--" + x.replace("_", "-") for x in rule_options if getattr(args, x) is not None]
    if given:
        sources.append("rule")
    if len(sources) > 1:
        what = " and ".join(f"--{x}" if x != "rule" else "/".join(given) for x in sources)
        raise CalcError(f"give one of --scenario, --option94 or the rule options (--rule-ipv6 …), not {what}")
    if args.prefix:
        prefix = _parse(args.prefix, IPv6Network, "--prefix", "2001:db8:12:3400::/56")
    if args.br:
        brs = (_parse(args.br, IPv6Address, "--br", "2001:db8:ffff::1"),)
    try:
        if args.scenario:
            sc = scenario_mod.load(args.scenario)  # a ScenarioError names the file, the key and the fix
            rules, brs, prefix, wan_mtu = sc.rules, brs or sc.brs, prefix or sc.first_prefix(), sc.wan_mtu
        elif args.option94:
            try:
                container = decode_option94(_hex(args.option94))
                validate_container(container)
            except CodecError as e:
                raise CalcError(f"--option94: {e}") from None
            rules, brs = container.rules, brs or container.brs
        else:
            rules = (_rule_from_options(args),)
        if prefix is None:
            raise CalcError("need --prefix: the delegated prefix the CE received (e.g. 2001:db8:12:3400::/56)")
        params = derive(rules, prefix, brs[0] if brs else None)
    except MapeError as e:
        raise CalcError(_option_name(str(e))) from None
    if not len(params.port_set):
        named = "--psid-wire" if args.psid_wire is not None else "--psid" if args.psid is not None else "--prefix"
        raise CalcError(f"{named}: {scenario_mod.no_usable_ports(params.port_set)}")
    return Calculation(params, wan_mtu)


def _option_name(message: str) -> str:
    """Model parameter names are the calculator's option names; say so with the dashes."""
    for name in ("ea-len", "psid-offset", "psid-len", "psid", "delegated prefix", "rule-ipv6", "rule-ipv4"):
        if message.startswith(name):
            flag = {"psid-offset": "--offset", "delegated prefix": "--prefix"}.get(name, f"--{name}")
            return f"{flag}: {message}"
    return message


def as_dict(p: MapeParams) -> dict[str, Any]:
    """The JSON object of ``mape.calc --json`` (stable keys; scripts depend on them)."""
    ranges = p.port_set.ranges()
    return {
        "delegated_prefix": str(p.delegated_prefix),
        "rule": {
            "ipv6_prefix": str(p.rule.ipv6_prefix),
            "ipv4_prefix": str(p.rule.ipv4_prefix),
            "ea_len": p.rule.ea_len,
            "forwarding": p.rule.forwarding,
        },
        "ipv4": p.ipv4_text,
        "shared": p.shared,
        "sharing_ratio": p.sharing_ratio,
        "psid_offset": p.psid_offset,
        "psid_len": p.psid_len,
        "psid": p.psid,
        "psid_wire": psid_to_wire(p.psid, p.psid_len),
        "port_ranges": [list(r) for r in ranges],
        "port_count": len(p.port_set),
        "pf_map_e_portset": p.port_set.pf(),
        "map_address": str(p.map_address),
        "br": str(p.br) if p.br else None,
        "notes": list(p.notes),
    }


def as_json(p: MapeParams) -> str:
    return json.dumps(as_dict(p), indent=2)


def as_text(p: MapeParams, wan_mtu: int | None = None) -> str:
    """What an admin reads: the values, then the lines to type on an OpenBSD CE."""
    ps = p.port_set
    lines = [
        f"delegated prefix   {p.delegated_prefix}",
        f"rule (BMR)         {p.rule.describe()}",
        f"IPv4               {p.ipv4_text}" + (f"  (shared 1:{p.sharing_ratio})" if p.shared else ""),
        f"PSID               offset {p.psid_offset}, length {p.psid_len}, " + (
            f"PSID {p.psid} (0x{p.psid:x}, right-aligned; option 93 and mapcalc's psid= carry it left-aligned: "
            f"{psid_to_wire(p.psid, p.psid_len):#06x})" if p.psid_len else "no PSID (the CE owns every port)"),
        f"ports              {ps.describe()}",
        f"MAP address        {p.map_address}",
        f"BR                 {p.br or '(not given: --br)'}",
    ]
    lines += [f"note               {n}" for n in p.notes]
    try:
        ce = ceconf.calc_lines(p, wan_mtu)
    except ceconf.CannotRender as e:
        ce = [f"# {e}"]
    lines += ["", "OpenBSD CE:", *(f"  {line}" for line in ce)]
    return "\n".join(lines)
