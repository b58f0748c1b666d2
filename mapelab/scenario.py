"""ISP scenarios: the parameters of one MAP-E domain, read from a TOML file into mape objects.

A scenario is what an ISP would publish (rules, BRs, the delegated-prefix pool, lease times,
WAN MTU) plus what the testbed needs to stage it (how many CEs, how Kea must encode the
container) and what the first CE must derive (``[expect]``, checked by the tests against the
model, so a scenario file doubles as a test vector).  Files live in ``scenarios/``; a name
without a path or ``.toml`` is looked up there.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from .mape import Container, MapeError, MapeParams, PortParams, Rule, derive
from .mape.codec import BorderRelay

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, the key and the fix."""


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
    p = Path(name_or_path)
    if p.suffix != ".toml" and p.parent == Path("."):
        p = SCENARIO_DIR / f"{p.name}.toml"
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in SCENARIO_DIR.glob("*.toml")))
        raise ScenarioError(f"scenario {name_or_path}: no such file; known scenarios: {known}")
    return p


def all_scenarios() -> list[Scenario]:
    return [load(p) for p in sorted(SCENARIO_DIR.glob("*.toml"))]


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ScenarioError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScenarioError(f"{where}: {key} = {value!r} must be a {names}")
    return value


def _net(text: str, cls: type, where: str, key: str) -> Any:
    try:
        return cls(text)
    except ValueError as e:
        raise ScenarioError(f"{where}: {key} = {text!r}: {e} (write the network address, e.g. 2001:db8::/40)") from None


def load(name_or_path: str | Path) -> Scenario:
    path = resolve(name_or_path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where}: not valid TOML: {e}") from None
    rules = []
    raw_rules = _get(data, "rule", list, where)
    if not raw_rules:
        raise ScenarioError(f"{where}: at least one [[rule]] is needed")
    for i, rt in enumerate(raw_rules):
        w = f"{where} [[rule]] #{i + 1}"
        pp = None
        if "portparams" in rt:
            ppt = _get(rt, "portparams", dict, w)
            pp_args = {k: _get(ppt, k, int, w + " portparams", 0) for k in ("psid_len", "psid")}
            pp_args["offset"] = _get(ppt, "offset", int, w + " portparams", 6)
            try:
                pp = PortParams(**pp_args)
            except MapeError as e:
                raise ScenarioError(f"{w}: {e}") from None
        try:
            rules.append(
                Rule(
                    ipv6_prefix=_net(_get(rt, "ipv6", str, w), IPv6Network, w, "ipv6"),
                    ipv4_prefix=_net(_get(rt, "ipv4", str, w), IPv4Network, w, "ipv4"),
                    ea_len=_get(rt, "ea_len", int, w),
                    portparams=pp,
                    forwarding=_get(rt, "forwarding", bool, w, False),
                )
            )
        except MapeError as e:
            raise ScenarioError(f"{w}: {e}") from None
    brs = tuple(_net(b, IPv6Address, where, "br") for b in _get(data, "br", list, where))
    if not brs:
        raise ScenarioError(f"{where}: br = [] : a MAP-E domain needs at least one BR address")
    dt = _get(data, "dhcp", dict, where)
    w = f"{where} [dhcp]"
    dhcp = DhcpSettings(
        pd_pool=_net(_get(dt, "pd_pool", str, w), IPv6Network, w, "pd_pool"),
        delegated_len=_get(dt, "delegated_len", int, w),
        **{k: _get(dt, k, int, w) for k in ("t1", "t2", "preferred", "valid") if k in dt},
        encoding=_get(dt, "encoding", str, w, "auto"),
    )
    if not dhcp.pd_pool.prefixlen <= dhcp.delegated_len <= 128:
        raise ScenarioError(f"{w}: delegated_len {dhcp.delegated_len} must be between the pool's "
                            f"/{dhcp.pd_pool.prefixlen} and 128")
    if dhcp.encoding not in ("auto", "csv", "hex"):
        raise ScenarioError(f"{w}: encoding = {dhcp.encoding!r}: use auto, csv or hex")
    if not dhcp.t1 <= dhcp.t2 <= dhcp.preferred <= dhcp.valid:
        raise ScenarioError(f"{w}: timers must satisfy t1 <= t2 <= preferred <= valid")
    wan = data.get("wan", {})
    ces = data.get("ces", {})
    scenario = Scenario(
        name=_get(data, "name", str, where, path.stem),
        description=_get(data, "description", str, where, ""),
        path=path,
        rules=tuple(rules),
        brs=brs,
        dhcp=dhcp,
        wan_mtu=_get(wan, "mtu", int, f"{where} [wan]", 1500),
        ce_count=_get(ces, "count", int, f"{where} [ces]", 1),
        br_first=_get(data, "br_first", bool, where, False),
        expect=_get(data, "expect", dict, where, {}),
    )
    if not 1280 <= scenario.wan_mtu <= 9000:
        raise ScenarioError(f"{where} [wan]: mtu = {scenario.wan_mtu}: IPv6 needs 1280..9000")
    n_prefixes = 1 << (dhcp.delegated_len - dhcp.pd_pool.prefixlen)
    if scenario.ce_count > n_prefixes:
        raise ScenarioError(f"{where} [ces]: count = {scenario.ce_count} but the pool holds {n_prefixes} prefix(es)")
    try:
        for prefix in scenario.delegated_prefixes():
            scenario.derive(prefix)
    except MapeError as e:
        raise ScenarioError(f"{where}: the pool's prefixes cannot be derived: {e}") from None
    return scenario


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
