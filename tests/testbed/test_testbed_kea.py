"""What Kea really puts on the wire equals what the scenario (through mapelab.mape) says the ISP sends.

For every scenario file: bring a testbed up (DHCP only), SOLICIT/REQUEST with ORO 94 from the
first CE slot, decode OPTION_S46_CONT_MAPE from the ADVERTISE and the REPLY with
mapelab.mape, and compare rule by rule, BR by BR, with the scenario; then derive the CE's
parameters from the delegated prefix and compare with the scenario's [expect].
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from mapelab import scenario as scenario_mod
from mapelab.mape import decode_option94, derive, mape_containers
from mapelab.testbed.kea import encoding_for
from tests.testbed.testbed_fixture import make_testbed, probe, runs_root  # noqa: F401

SCENARIOS = sorted(p.stem for p in scenario_mod.SCENARIO_DIR.glob("*.toml"))
KEA_EXAMPLE1 = Path(__file__).resolve().parents[1] / "unit" / "data" / "kea22-example1-option94.hex"


@pytest.mark.parametrize("name", SCENARIOS)
def test_kea_sends_the_scenario_container(make_testbed, name: str) -> None:  # noqa: F811
    scn = scenario_mod.load(name)
    tb = make_testbed(name, br=False)
    assert tb.status.extra["mape_option"] == encoding_for(scn)
    got = probe(tb)
    for msg in ("advertise", "reply"):
        raw94 = got[msg]["option94"]
        assert len(raw94) == 1, f"{msg}: expected one option 94, got {raw94}"
        container = decode_option94(bytes.fromhex(raw94[0]))
        assert container.options == scn.container().options, f"{msg} of {name}: {raw94[0]}"
        # The same bytes as a whole DHCPv6 option list: a valid container, nothing discarded.
        good, discarded = mape_containers(bytes.fromhex(raw94[0]))
        assert len(good) == 1 and not discarded
    prefixes = [IPv6Network(p["prefix"]) for p in got["reply"]["prefixes"]]
    assert prefixes == [scn.first_prefix()]
    container = decode_option94(bytes.fromhex(got["reply"]["option94"][0]))
    params = derive(container.rules, prefixes[0], container.brs[0])
    exp = scn.expect
    if exp:
        assert str(prefixes[0]) == exp["prefix"]
        assert params.ipv4 == IPv4Address(exp["ipv4"])
        assert params.psid == exp["psid"] and params.psid_len == exp["psid_len"]
        assert params.map_address == IPv6Address(exp["map_address"])
    assert container.brs == scn.brs


def test_multi_rule_goes_as_hex_and_arrives_whole(make_testbed) -> None:  # noqa: F811
    """Kea 2.2 would drop rules 2 and 3 from CSV option-data: the hex path must carry all three."""
    scn = scenario_mod.load("multi-rule")
    tb = make_testbed("multi-rule", br=False)
    assert tb.status.extra["mape_option"] == "hex"
    c = decode_option94(bytes.fromhex(probe(tb)["reply"]["option94"][0]))
    assert c.rules == scn.rules and len(c.rules) == 3
    assert derive(c.rules, scn.first_prefix()).rule.ipv6_prefix == IPv6Network(scn.expect["rule_ipv6"])


def test_no_oro_no_container(make_testbed) -> None:  # noqa: F811
    """Decision: the container goes only to clients that ask for 94 in their ORO (no always-send)."""
    tb = make_testbed("cosmote-like", br=False)
    got = probe(tb, 1, "--no-oro94")
    assert got["reply"]["option94"] == [] and got["reply"]["prefixes"]


def test_kea_example1_bytes_match_the_captured_file(make_testbed) -> None:  # noqa: F811
    """tests/unit/data/kea22-example1-option94.hex was captured from this Kea in CSV mode."""
    tb = make_testbed("rfc7597-example1", br=False)
    assert tb.status.extra["mape_option"] == "csv"
    live = probe(tb)["reply"]["option94"][0]
    assert live == KEA_EXAMPLE1.read_text().strip().lower()


def test_two_ces_get_the_first_two_prefixes_and_isp_routes(make_testbed) -> None:  # noqa: F811
    scn = scenario_mod.load("cosmote-like")
    tb = make_testbed("cosmote-like", br=False)
    got = [IPv6Network(probe(tb, i)["reply"]["prefixes"][0]["prefix"]) for i in (1, 2)]
    assert got == scn.delegated_prefixes(2)
    for p in got:  # the supervisor installs the routes from the replies it sees
        assert tb.wait_delegated(str(p), timeout=3).startswith("fe80::")
    assert set(tb.delegations()) == {str(p) for p in got}
