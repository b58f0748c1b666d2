"""`invoke mape.calc`: the MAP-E calculator."""

from __future__ import annotations

from invoke import Collection, task

from mapelab import calc as calc_mod

from ._guard import ScenarioFile, guarded


@task(
    help={
        "rule_ipv6": "Rule IPv6 prefix, e.g. 2001:db8::/40",
        "rule_ipv4": "Rule IPv4 prefix, e.g. 192.0.2.0/24",
        "ea_len": "EA-bits length (0..48)",
        "offset": "PSID offset a (0..15; MAP-E default 6)",
        "psid_len": "explicit PSID length k (0 = derive from the EA bits)",
        "psid": "explicit PSID, right-aligned (decimal or 0x hex; RFC 7597 Example 5's 0x34)",
        "psid_wire": "explicit PSID as option 93's LEFT-aligned 16-bit field (what OpenWrt mapcalc's psid= "
                     "takes, e.g. 0x3400 for PSID 0x34 of length 8); needs --psid-len",
        "prefix": "the delegated (End-user) IPv6 prefix, e.g. 2001:db8:12:3400::/56",
        "br": "the BR's IPv6 address (for the tunnel endpoints)",
        "scenario": "a scenario name (scenarios/NAME.toml) or a TOML file; --prefix overrides its first prefix",
        "option94": "a raw OPTION_S46_CONT_MAPE in hex, body alone or with its 4-byte header",
        "json": "print one JSON object instead of text",
    }
)
@guarded(scenario=ScenarioFile())
def calc(
    c, rule_ipv6=None, rule_ipv4=None, ea_len=None, offset=None, psid_len=None, psid=None, psid_wire=None,
    prefix=None, br=None, scenario=None, option94=None, json=False,
):
    """Derive IPv4, PSID, port set and MAP address from MAP-E parameters (RFC 7597)."""
    args = calc_mod.CalcInput(
        rule_ipv6=rule_ipv6, rule_ipv4=rule_ipv4, ea_len=ea_len, offset=offset, psid_len=psid_len,
        psid=psid, psid_wire=psid_wire, prefix=prefix, br=br, scenario=scenario, option94=option94,
    )
    result = calc_mod.calculate(args)  # CalcError / ScenarioError: one line, exit 2
    print(calc_mod.as_json(result.params) if json else calc_mod.as_text(result.params, result.wan_mtu))


collection = Collection("mape", calc)
