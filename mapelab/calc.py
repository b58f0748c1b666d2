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
from .mape import CodecError, MapeError, MapeParams, PortParams, Rule, decode_option94, derive, validate_container
from .openbsd import ceconf


class CalcError(ValueError):
    """One line for the user: the bad input, and what to type instead."""


@dataclass
class CalcInput:
    rule_ipv6: str | None = None
    rule_ipv4: str | None = None
    ea_len: int | None = None
    offset: int | None = None
    psid_len: int | None = None
    psid: int | None = None
    prefix: str | None = None
    br: str | None = None
    scenario: str | None = None
    option94: str | None = None


def _parse(text: str, cls: type, option: str, example: str) -> Any:
    try:
        return cls(text.strip())
    except ValueError as e:
        raise CalcError(f"{option} {text!r}: {e}; expected something like {example}") from None


def _int(text: str | int, option: str) -> int:
    if isinstance(text, int):
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


def calculate(args: CalcInput) -> MapeParams:
    """Resolve the inputs to rules, BR and delegated prefix, then derive."""
    rules: tuple[Rule, ...] = ()
    brs: tuple[IPv6Address, ...] = ()
    prefix: IPv6Network | None = None
    sources = [x for x in ("scenario", "option94") if getattr(args, x)]
    if args.rule_ipv6 or args.rule_ipv4:
        sources.append("rule")
    if len(sources) > 1:
        raise CalcError(f"give one of --scenario, --option94 or --rule-ipv6/--rule-ipv4, not {' and '.join(sources)}")
    try:
        if args.scenario:
            try:
                sc = scenario_mod.load(args.scenario)
            except scenario_mod.ScenarioError as e:
                raise CalcError(str(e)) from None
            rules, brs, prefix = sc.rules, sc.brs, sc.first_prefix()
        elif args.option94:
            try:
                container = decode_option94(_hex(args.option94))
                validate_container(container)
            except CodecError as e:
                raise CalcError(f"--option94: {e}") from None
            rules, brs = container.rules, container.brs
        else:
            if not (args.rule_ipv6 and args.rule_ipv4 and args.ea_len is not None):
                raise CalcError(
                    "need --rule-ipv6, --rule-ipv4 and --ea-len (or --scenario NAME, or --option94 HEX)"
                )
            pp = None
            if args.offset is not None or args.psid_len is not None or args.psid is not None:
                pp = PortParams(
                    offset=6 if args.offset is None else _int(args.offset, "--offset"),
                    psid_len=0 if args.psid_len is None else _int(args.psid_len, "--psid-len"),
                    psid=0 if args.psid is None else _int(args.psid, "--psid"),
                )
            rules = (
                Rule(
                    ipv6_prefix=_parse(args.rule_ipv6, IPv6Network, "--rule-ipv6", "2001:db8::/40"),
                    ipv4_prefix=_parse(args.rule_ipv4, IPv4Network, "--rule-ipv4", "192.0.2.0/24"),
                    ea_len=_int(args.ea_len, "--ea-len"),
                    portparams=pp,
                ),
            )
        if args.prefix:
            prefix = _parse(args.prefix, IPv6Network, "--prefix", "2001:db8:12:3400::/56")
        if args.br:
            brs = (_parse(args.br, IPv6Address, "--br", "2001:db8:ffff::1"),)
        if prefix is None:
            raise CalcError("need --prefix: the delegated prefix the CE received (e.g. 2001:db8:12:3400::/56)")
        return derive(rules, prefix, brs[0] if brs else None)
    except MapeError as e:
        raise CalcError(_option_name(str(e))) from None


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
        f"PSID               offset {p.psid_offset}, length {p.psid_len}, PSID {p.psid} (0x{p.psid:x})",
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
