"""`invoke mape.calc`: the MAP-E calculator."""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from mapelab import calc as calc_mod


@task(
    help={
        "rule_ipv6": "Rule IPv6 prefix, e.g. 2001:db8::/40",
        "rule_ipv4": "Rule IPv4 prefix, e.g. 192.0.2.0/24",
        "ea_len": "EA-bits length (0..48)",
        "offset": "PSID offset a (0..15; MAP-E default 6)",
        "psid_len": "explicit PSID length k (0 = derive from the EA bits)",
        "psid": "explicit PSID (decimal or 0x hex)",
        "prefix": "the delegated (End-user) IPv6 prefix, e.g. 2001:db8:12:3400::/56",
        "br": "the BR's IPv6 address (for the tunnel endpoints)",
        "scenario": "a scenario name (scenarios/NAME.toml) or a TOML file; --prefix overrides its first prefix",
        "option94": "a raw OPTION_S46_CONT_MAPE in hex, body alone or with its 4-byte header",
        "json": "print one JSON object instead of text",
    }
)
def calc(
    c, rule_ipv6=None, rule_ipv4=None, ea_len=None, offset=None, psid_len=None, psid=None,
    prefix=None, br=None, scenario=None, option94=None, json=False,
):
    """Derive IPv4, PSID, port set and MAP address from MAP-E parameters (RFC 7597)."""
    args = calc_mod.CalcInput(
        rule_ipv6=rule_ipv6, rule_ipv4=rule_ipv4, ea_len=ea_len, offset=offset, psid_len=psid_len,
        psid=psid, prefix=prefix, br=br, scenario=scenario, option94=option94,
    )
    try:
        params = calc_mod.calculate(args)
    except calc_mod.CalcError as e:
        raise Exit(f"mape.calc: {e}", code=2) from None
    wan_mtu = None
    if scenario:
        from mapelab import scenario as scenario_mod

        wan_mtu = scenario_mod.load(scenario).wan_mtu
    print(calc_mod.as_json(params) if json else calc_mod.as_text(params, wan_mtu))


collection = Collection("mape", calc)
