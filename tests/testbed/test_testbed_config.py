"""Kea configuration from scenarios: which encoding, what Kea sends for the F flag, the renumber pool.

The F-flag test writes scenarios of its own (a copy of rfc7597-example1 with ``forwarding = true``)
and checks the byte Kea really puts on the wire through each path.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Network
from pathlib import Path

import pytest

from mapelab import scenario as scenario_mod
from mapelab.mape import decode_option94
from mapelab.testbed.kea import KeaError, LeasePlan, csv_blockers, encoding_for, kea_config, mape_option_data
from mapelab.testbed.supervisor import renumber_pool, scenario_toml
from mapelab.testbed.topology import Layout
from tests.testbed.testbed_fixture import make_testbed, probe, runs_root  # noqa: F401


def test_encodings_of_the_shipped_scenarios() -> None:
    enc = {s.path.stem: encoding_for(s) for s in scenario_mod.all_scenarios()}
    assert enc["multi-rule"] == "hex" and enc["cosmote-like"] == "csv"
    assert csv_blockers(scenario_mod.load("multi-rule"))


def test_csv_demanded_where_impossible_says_how_to_fix(tmp_path: Path) -> None:
    text = scenario_mod.resolve("multi-rule").read_text().replace('encoding = "hex"', 'encoding = "csv"')
    (tmp_path / "mr.toml").write_text(text)
    with pytest.raises(KeaError, match=r"3 rules.*encoding = \"hex\""):
        encoding_for(scenario_mod.load(tmp_path / "mr.toml"))


def test_csv_option_data_shape() -> None:
    scn = scenario_mod.load("cosmote-like")
    opts = mape_option_data(LeasePlan.of(scn))
    assert opts[0] == {"name": "s46-cont-mape"}
    assert opts[1]["data"] == "0, 14, 24, 198.51.100.0, 2001:db8:6200::/42"
    assert opts[2]["data"] == "6, 0/0" and opts[3]["data"] == "2001:db8:ffff::1"
    withdrawn = replace(LeasePlan.of(scn), send_mape=False)
    cfg = kea_config(withdrawn, interface="x", wan_subnet=IPv6Network("fd00::/64"), run_dir=Path("/r"))
    assert cfg["Dhcp6"]["subnet6"][0]["option-data"] == []


def test_scenario_toml_round_trips(tmp_path: Path) -> None:
    for scn in scenario_mod.all_scenarios():
        p = tmp_path / f"{scn.path.stem}.toml"
        p.write_text(scenario_toml(scn, scn.brs, scn.ce_count))
        again = scenario_mod.load(p)
        assert (again.rules, again.brs, again.dhcp, again.wan_mtu, again.br_first) == (
            scn.rules, scn.brs, scn.dhcp, scn.wan_mtu, scn.br_first)


def test_renumber_pools_stay_derivable() -> None:
    for scn in scenario_mod.all_scenarios():
        if scn.path.stem == "explicit-psid":
            continue  # its /56 rule is its pool: nothing to move to
        pool = renumber_pool(scn, scn.dhcp.pd_pool)
        assert pool != scn.dhcp.pd_pool and pool.prefixlen == scn.dhcp.pd_pool.prefixlen


def test_interface_names_fit_ifnamsiz() -> None:
    lay = Layout("mlffff-", scenario_mod.load("cosmote-like"), 99, frozenset({98, 99}))
    names = [lay.wan_bridge, lay.tun, lay.isp_inet_if, lay.inet_if, lay.root_wan_bridge, lay.root_wan_veth,
             lay.isp_wan_veth]
    for i in (1, 98, 99):
        names += [lay.wan_if(i), lay.wan_port(i), lay.lan_if(i), lay.lan_host_if(i), lay.root_lan_bridge(i),
                  lay.root_lan_veth(i), lay.wan_tap(i), lay.lan_tap(i)]
    assert max(map(len, names)) <= 15 and len(set(names)) == len(names)


@pytest.mark.parametrize("encoding", ["csv", "auto"])
def test_f_flag_reaches_the_wire_as_the_low_bit(make_testbed, tmp_path: Path, encoding: str) -> None:  # noqa: F811
    text = scenario_mod.resolve("rfc7597-example1").read_text()
    text = text.replace("ea_len = 16\n", "ea_len = 16\nforwarding = true\n", 1)
    text = text.replace('encoding = "csv"', f'encoding = "{encoding}"')
    path = tmp_path / f"f-{encoding}.toml"
    path.write_text(text)
    scn = scenario_mod.load(path)
    assert scn.rules[0].forwarding
    tb = make_testbed(str(path), br=False)
    assert tb.status.extra["mape_option"] == ("csv" if encoding == "csv" else "hex")
    raw = bytes.fromhex(probe(tb)["reply"]["option94"][0])
    rule = decode_option94(raw).rules[0]
    assert rule.forwarding and rule.reserved_flags == 0
    assert raw[8] == 0x01  # the flags byte of the first rule: F only
