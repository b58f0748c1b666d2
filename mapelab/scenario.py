"""ISP scenarios: the parameters of one MAP-E domain, read from a TOML file into mape objects.

A scenario is what an ISP would publish (rules, BRs, the delegated-prefix pool, lease times,
WAN MTU) plus what the testbed needs to stage it (how many CEs, how Kea must encode the
container) and what the first CE must derive (``[expect]``, checked by the tests against the
model, so a scenario file doubles as a test vector).  Files live in ``scenarios/``; a name
without a path or ``.toml`` is looked up there.
"""

from __future__ import annotations

import difflib
import itertools
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import named_toml
from .mape import Container, MapeError, MapeParams, PortParams, PortSet, Rule, derive
from .mape.codec import BorderRelay

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class ScenarioError(InputError):
    """A scenario file that cannot be used; the message (one line) names the file, the key and the fix."""


@dataclass(frozen=True)
class DhcpSettings:
    """What the DHCPv6 server hands out: the pool delegated prefixes come from and the timers."""

    pd_pool: IPv6Network
    delegated_len: int
    t1: int = 20
    t2: int = 32
    preferred: int = 40
    valid: int = 60
    encoding: str = "auto"  # "csv" (Kea option-data), "hex" (whole container), "auto"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    rules: tuple[Rule, ...]
    brs: tuple[IPv6Address, ...]
    dhcp: DhcpSettings
    wan_mtu: int = 1500
    ce_count: int = 1
    br_first: bool = False  # the container lists the BR before the rules
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def br(self) -> IPv6Address:
        return self.brs[0]

    def container(self) -> Container:
        """The MAP-E container as the ISP sends it, in the scenario's sub-option order."""
        brs = tuple(BorderRelay(b) for b in self.brs)
        opts = brs + self.rules if self.br_first else self.rules + brs
        return Container(94, opts)

    def delegated_prefixes(self, count: int | None = None) -> list[IPv6Network]:
        """The first ``count`` (default: one per CE) prefixes of the pool, in the order Kea's
        iterative allocator hands them out."""
        subnets = self.dhcp.pd_pool.subnets(new_prefix=self.dhcp.delegated_len)
        return list(itertools.islice(subnets, count or self.ce_count))

    def first_prefix(self) -> IPv6Network:
        return next(self.dhcp.pd_pool.subnets(new_prefix=self.dhcp.delegated_len))

    def derive(self, prefix: IPv6Network | None = None) -> MapeParams:
        return derive(self.rules, prefix or self.first_prefix(), self.br)

    @property
    def tunnel_mtu(self) -> int:
        """RFC 2473: the IPv6 header costs 40 bytes of the WAN MTU."""
        return self.wan_mtu - 40


def resolve(name_or_path: str | Path) -> Path:
    """A scenario name (``cosmote-like``) or a path to a TOML file → an existing file."""
    p, known = named_toml(name_or_path, SCENARIO_DIR)
    if not p.is_file():
        raise ScenarioError(f"{name_or_path}: no such scenario file ({p}); known scenarios: {', '.join(known)}")
    return p


def all_scenarios() -> list[Scenario]:
    return [load(p) for p in sorted(SCENARIO_DIR.glob("*.toml"))]


# -- the schema: every key a scenario file may hold, its type and its range -----------------------------


@dataclass(frozen=True)
class Key:
    """One key of a scenario table: its TOML type, whether it must be there, and what values fit.

    ``kind`` is ``str``, ``int``, ``bool``, ``list`` (of ``items``) or ``dict`` (a table checked
    against ``table``); ``tables`` marks an array of tables (``[[rule]]``).  ``example`` is what the
    error message suggests writing.
    """

    kind: type
    required: bool = False
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()
    items: type | None = None
    length: tuple[int, int | None] | None = None  # (min, max) entries of a list
    table: dict[str, Key] | None = None
    tables: bool = False
    example: str = ""


_U32 = (1 << 32) - 1
_TIMER = Key(int, lo=1, hi=_U32, example="seconds, e.g. 20")
PORTPARAMS = {
    "offset": Key(int, lo=0, hi=15, example="6"),
    "psid_len": Key(int, lo=0, hi=16, example="0 (the PSID length comes from the EA bits)"),
    "psid": Key(int, lo=0, hi=0xFFFF, example="0x34 (right-aligned)"),
}
RULE = {
    "ipv6": Key(str, required=True, example='"2001:db8::/40"'),
    "ipv4": Key(str, required=True, example='"192.0.2.0/24"'),
    "ea_len": Key(int, required=True, lo=0, hi=48, example="16"),
    "forwarding": Key(bool, example="false"),
    "portparams": Key(dict, table=PORTPARAMS, example="{ offset = 6, psid_len = 0 }"),
}
DHCP = {
    "pd_pool": Key(str, required=True, example='"2001:db8:12:3400::/56"'),
    "delegated_len": Key(int, required=True, lo=1, hi=128, example="56"),
    "t1": _TIMER, "t2": _TIMER, "preferred": _TIMER, "valid": _TIMER,
    "encoding": Key(str, choices=("auto", "csv", "hex"), example='"auto"'),
}
_RANGE = Key(list, items=int, length=(2, 2), example="[1232, 1235]")
EXPECT = {
    "prefix": Key(str, example='"2001:db8:12:3400::/56"'),
    "rule_ipv6": Key(str, example='"2001:db8::/40"'),
    "ipv4": Key(str, example='"192.0.2.18"'),
    "map_address": Key(str, example='"2001:db8:12:3400:0:c000:212:34"'),
    "psid": Key(int, lo=0, hi=0xFFFF, example="0x34"),
    "psid_len": Key(int, lo=0, hi=16, example="8"),
    "psid_offset": Key(int, lo=0, hi=15, example="6"),
    "ranges": Key(int, lo=1, hi=0xFFFF, example="63"),
    "port_count": Key(int, lo=1, hi=0xFFFF, example="252"),
    "first_range": _RANGE,
    "last_range": _RANGE,
    "pf": Key(str, example='"6/8/52"'),
}
MAX_CES = 255  # each CE slot's LAN is 192.168.<slot>.0/24
SCHEMA = {
    "name": Key(str, example='"my-isp"'),
    "description": Key(str, example='"what this domain is"'),
    "br": Key(list, required=True, items=str, length=(1, None), example='["2001:db8:ffff::1"]'),
    "br_first": Key(bool, example="false"),
    "rule": Key(list, required=True, table=RULE, tables=True, length=(1, None), example="[[rule]] tables"),
    "dhcp": Key(dict, required=True, table=DHCP, example="a [dhcp] table"),
    "wan": Key(dict, table={"mtu": Key(int, lo=1280, hi=9000, example="1500")}, example="a [wan] table"),
    "ces": Key(dict, table={"count": Key(int, lo=1, hi=MAX_CES, example="1")}, example="a [ces] table"),
    "expect": Key(dict, table=EXPECT, example="an [expect] table"),
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}


def _toml(value: Any) -> str:
    """A value the way it looks in the file (``true``, ``"x"``, ``{ a = 1 }``), for messages."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def nearest_key(key: str, known: Iterable[str]) -> str | None:
    """The known key a typo most likely meant (``mut`` → ``mtu``, ``cout`` → ``count``), or None."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def check_table(data: dict[str, Any], schema: dict[str, Key], where: str) -> None:
    """Every key known, every required key there, every value of its type and in its range.

    ``where`` names the file and the table (``x.toml [wan]``); the first problem raises
    :class:`ScenarioError` with one line that names the key and the fix.
    """
    for key, value in data.items():
        spec = schema.get(key)
        if spec is None:
            near = nearest_key(key, schema)
            hint = f"did you mean {near!r}?" if near else f"known keys: {', '.join(schema)}"
            raise ScenarioError(f"{where}: unknown key {key!r} ({hint})")
        _check_value(value, spec, where, key)
    for key, spec in schema.items():
        if spec.required and key not in data:
            raise ScenarioError(f"{where}: missing key {key!r} (e.g. {key} = {spec.example})"
                                if spec.kind is not dict and not spec.tables else
                                f"{where}: missing {spec.example}")


def _check_value(value: Any, spec: Key, where: str, key: str) -> None:
    text = _toml(value)
    shown = f"{key} = {text if len(text) <= 60 else text[:57] + '...'}"
    if spec.tables:
        if isinstance(value, dict):
            raise ScenarioError(f"{where}: [{key}] is a single table; write [[{key}]] (double brackets), one per {key}")
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise ScenarioError(f"{where}: {shown} must be {spec.example} (a [[{key}]] header per entry)")
    elif not _is(value, spec.kind):
        if spec.kind is dict and not spec.example.startswith("{"):
            keys = ", ".join(spec.table or ())
            raise ScenarioError(f"{where}: {shown} must be a table: write [{key}] on a line of its own, "
                                f"then its keys ({keys})")
        raise ScenarioError(f"{where}: {shown} must be {_TYPE_NAMES[spec.kind]}, e.g. {key} = {spec.example}")
    if spec.kind is int and not ((spec.lo is None or value >= spec.lo) and (spec.hi is None or value <= spec.hi)):
        raise ScenarioError(f"{where}: {shown} is out of range; use {spec.lo}..{spec.hi}")
    if spec.choices and value not in spec.choices:
        raise ScenarioError(f"{where}: {shown} is not one of {', '.join(spec.choices)}")
    if spec.kind is list:
        lo, hi = spec.length or (0, None)
        if len(value) < lo or (hi is not None and len(value) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            what = spec.example if spec.tables else f"entr{'y' if lo == 1 else 'ies'}, e.g. {key} = {spec.example}"
            raise ScenarioError(f"{where}: {key} needs {want} {what}")
        for item in value if spec.items is not None else ():
            if not _is(item, spec.items):
                raise ScenarioError(f"{where}: {shown}: every entry must be {_TYPE_NAMES[spec.items]}, "
                                    f"e.g. {key} = {spec.example}")
        for i, t in enumerate(value if spec.tables and spec.table is not None else ()):
            check_table(t, spec.table, f"{where} [[{key}]] #{i + 1}")
    elif spec.kind is dict and spec.table is not None:
        check_table(value, spec.table, f"{where} [{key}]" if "[" not in where else f"{where} {key}")


# -- loading: checked data → mape objects ---------------------------------------------------------------


def _net(text: str, cls: type, where: str, key: str) -> Any:
    try:
        return cls(text)
    except ValueError as e:
        example = "2001:db8::/40" if cls is IPv6Network else "192.0.2.0/24" if cls is IPv4Network else "2001:db8::1"
        raise ScenarioError(f"{where}: {key} = {text!r}: {e} (write it like {example})") from None


def _rule(rt: dict[str, Any], w: str) -> Rule:
    pp = None
    if "portparams" in rt:
        ppt = rt["portparams"]
        try:
            pp = PortParams(offset=ppt.get("offset", 6), psid_len=ppt.get("psid_len", 0), psid=ppt.get("psid", 0))
        except MapeError as e:
            raise ScenarioError(f"{w} portparams: {e}") from None
    try:
        return Rule(
            ipv6_prefix=_net(rt["ipv6"], IPv6Network, w, "ipv6"),
            ipv4_prefix=_net(rt["ipv4"], IPv4Network, w, "ipv4"),
            ea_len=rt["ea_len"],
            portparams=pp,
            forwarding=rt.get("forwarding", False),
        )
    except MapeError as e:
        raise ScenarioError(f"{w}: {e}") from None


def load(name_or_path: str | Path) -> Scenario:
    """Read and check a scenario: an unknown key, a wrong type or a value out of range is a
    :class:`ScenarioError` naming the file, the table and the key, before anything uses it."""
    path = resolve(name_or_path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{where}: cannot read it: {e}") from None
    check_table(data, SCHEMA, where)
    rules = tuple(_rule(rt, f"{where} [[rule]] #{i + 1}") for i, rt in enumerate(data["rule"]))
    seen: dict[IPv6Network, int] = {}
    for i, r in enumerate(rules):
        if r.ipv6_prefix in seen:
            raise ScenarioError(
                f"{where} [[rule]] #{i + 1}: ipv6 = \"{r.ipv6_prefix}\" is also rule #{seen[r.ipv6_prefix] + 1}'s; "
                "two rules with one IPv6 prefix are ambiguous (RFC 7597 leaves the tie open): give each its own")
        seen[r.ipv6_prefix] = i
    brs = tuple(_net(b, IPv6Address, where, "br") for b in data["br"])
    dt = data["dhcp"]
    w = f"{where} [dhcp]"
    dhcp = DhcpSettings(
        pd_pool=_net(dt["pd_pool"], IPv6Network, w, "pd_pool"),
        delegated_len=dt["delegated_len"],
        **{k: dt[k] for k in ("t1", "t2", "preferred", "valid") if k in dt},
        encoding=dt.get("encoding", "auto"),
    )
    if not dhcp.pd_pool.prefixlen <= dhcp.delegated_len <= 128:
        raise ScenarioError(f"{w}: delegated_len = {dhcp.delegated_len} must be between the pool's "
                            f"/{dhcp.pd_pool.prefixlen} and 128")
    if not dhcp.t1 <= dhcp.t2 <= dhcp.preferred <= dhcp.valid:
        raise ScenarioError(f"{w}: timers t1 = {dhcp.t1}, t2 = {dhcp.t2}, preferred = {dhcp.preferred}, "
                            f"valid = {dhcp.valid} must satisfy t1 <= t2 <= preferred <= valid")
    scenario = Scenario(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        path=path,
        rules=rules,
        brs=brs,
        dhcp=dhcp,
        wan_mtu=data.get("wan", {}).get("mtu", 1500),
        ce_count=data.get("ces", {}).get("count", 1),
        br_first=data.get("br_first", False),
        expect=data.get("expect", {}),
    )
    n_prefixes = 1 << (dhcp.delegated_len - dhcp.pd_pool.prefixlen)
    if scenario.ce_count > n_prefixes:
        raise ScenarioError(f"{where} [ces]: count = {scenario.ce_count} but the pool holds {n_prefixes} prefix(es); "
                            "use fewer CEs or a wider [dhcp] pd_pool")
    for prefix in scenario.delegated_prefixes():
        try:
            params = scenario.derive(prefix)
        except MapeError as e:
            raise ScenarioError(f"{where}: the pool's prefix {prefix} cannot be derived: {e}") from None
        if not len(params.port_set):
            raise ScenarioError(f"{where}: the pool's prefix {prefix} gets {no_usable_ports(params.port_set)}")
    return scenario


def no_usable_ports(ps: PortSet) -> str:
    """Why a port set is empty, for the one-line refusal of the calculator and of scenarios."""
    return (f"PSID {ps.psid} with PSID offset {ps.offset} and PSID length {ps.psid_len}: no usable port "
            "(its only port is 0, which is never used); use another PSID or a shorter PSID length")


def to_toml(s: Scenario) -> str:
    """The scenario as a TOML file again — the inverse of :func:`load` (``[expect]`` included).

    The testbed writes the scenario a run really uses (its BRs, pool, timers, CE count) with it,
    so the BR process and a later reader see exactly what Kea serves.
    """

    def q(v: object) -> str:
        return json.dumps(str(v))

    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return q(v)

    lines = [f"name = {q(s.name)}", f"description = {q(s.description)}",
             "br = [" + ", ".join(q(b) for b in s.brs) + "]", f"br_first = {str(s.br_first).lower()}", ""]
    for r in s.rules:
        lines += ["[[rule]]", f"ipv6 = {q(r.ipv6_prefix)}", f"ipv4 = {q(r.ipv4_prefix)}", f"ea_len = {r.ea_len}"]
        if r.forwarding:
            lines.append("forwarding = true")
        if r.portparams is not None:
            pp = r.portparams
            lines.append(f"portparams = {{ offset = {pp.offset}, psid_len = {pp.psid_len}, psid = {pp.psid} }}")
        lines.append("")
    d = s.dhcp
    lines += ["[dhcp]", f"pd_pool = {q(d.pd_pool)}", f"delegated_len = {d.delegated_len}",
              f"t1 = {d.t1}", f"t2 = {d.t2}", f"preferred = {d.preferred}", f"valid = {d.valid}",
              f"encoding = {q(d.encoding)}", "",
              "[wan]", f"mtu = {s.wan_mtu}", "",
              "[ces]", f"count = {s.ce_count}", ""]
    if s.expect:
        lines += ["[expect]"] + [f"{k} = {value(v)}" for k, v in s.expect.items()] + [""]
    return "\n".join(lines)
