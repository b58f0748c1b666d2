"""Scenario files are checked, not trusted: unknown keys (with the nearest valid one), types, ranges, ties."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapelab import scenario

COSMOTE = (scenario.SCENARIO_DIR / "cosmote-like.toml").read_text()


def variant(tmp_path: Path, old: str, new: str, text: str = COSMOTE) -> Path:
    assert old in text, old
    path = tmp_path / "s.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def refused(path: Path) -> str:
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.load(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


@pytest.mark.parametrize(
    ("old", "new", "table", "typo", "meant"),
    [
        ("mtu = 1492", "mut = 1492", "[wan]", "mut", "mtu"),
        ("offset = 6", "ofset = 6", "portparams", "ofset", "offset"),
        ("count = 2", "cout = 2", "[ces]", "cout", "count"),
        ("ea_len = 14", "ealen = 14", "[[rule]] #1", "ealen", "ea_len"),
        ("delegated_len = 56", "delegated_length = 56", "[dhcp]", "delegated_length", "delegated_len"),
        ('br = ["', 'brs = ["', "", "brs", "br"),
        ("port_count = 1008", "port_cout = 1008", "[expect]", "port_cout", "port_count"),
    ],
)
def test_a_typo_names_the_file_the_table_the_key_and_the_nearest(tmp_path: Path, old: str, new: str, table: str,
                                                                   typo: str, meant: str) -> None:
    msg = refused(variant(tmp_path, old, new))
    assert f"unknown key {typo!r}" in msg and f"did you mean {meant!r}" in msg and table in msg


def test_an_unknown_key_with_nothing_near_lists_the_known_ones(tmp_path: Path) -> None:
    msg = refused(variant(tmp_path, "mtu = 1492", "mtu = 1492\nzzzzzz = 1"))
    assert "unknown key 'zzzzzz'" in msg and "known keys: mtu" in msg


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("[wan]\nmtu = 1492", "[wan2]\nmtu = 1492", "unknown key 'wan2'"),
        ("mtu = 1492", "mtu = true", "mtu = true must be an integer"),
        ("mtu = 1492", 'mtu = "1492"', 'mtu = "1492" must be an integer'),
        ("mtu = 1492", "mtu = 1279", "mtu = 1279 is out of range; use 1280..9000"),
        ("count = 2", "count = 0", "count = 0 is out of range; use 1..255"),
        ('encoding = "csv"', 'encoding = "csv"\nt1 = -5', "t1 = -5 is out of range"),
        ('encoding = "csv"', 'encoding = "csv"\nvalid = 0', "valid = 0 is out of range"),
        ('encoding = "csv"', 'encoding = "csv"\nt1 = 50\nt2 = 10', "t1 <= t2 <= preferred <= valid"),
        ('encoding = "csv"', 'encoding = "json"', 'encoding = "json" is not one of auto, csv, hex'),
        ("ea_len = 14", "ea_len = 49", "ea_len = 49 is out of range; use 0..48"),
        ("offset = 6, psid_len = 0", "offset = 16, psid_len = 0", "offset = 16 is out of range; use 0..15"),
        ('br = ["2001:db8:ffff::1"]', 'br = "2001:db8:ffff::1"', "must be a list"),
        ('br = ["2001:db8:ffff::1"]', "br = { a = 1 }", "must be a list"),
        ('br = ["2001:db8:ffff::1"]', "br = []", "br needs at least 1 entry"),
        ('br = ["2001:db8:ffff::1"]', "br = [1]", "every entry must be a string"),
        ('br = ["2001:db8:ffff::1"]', 'br = ["2001:db8:ffff::zz"]', "br = '2001:db8:ffff::zz'"),
        ("[[rule]]", "[rule]", "[rule] is a single table; write [[rule]]"),
        ("portparams = { offset = 6, psid_len = 0 }", "portparams = 6", "portparams = 6 must be a table"),
        ("first_range = [1056, 1071]", "first_range = [1056]", "first_range needs exactly 2 entries"),
        ("psid = 2\n", 'psid = "2"\n', 'psid = "2" must be an integer'),
        ("[dhcp]", "[dhcpv6]", "unknown key 'dhcpv6' (did you mean 'dhcp'?)"),
    ],
)
def test_wrong_types_and_ranges_are_one_line(tmp_path: Path, old: str, new: str, needle: str) -> None:
    assert needle in refused(variant(tmp_path, old, new))


def test_a_scalar_where_a_table_belongs(tmp_path: Path) -> None:
    text = COSMOTE.replace("[wan]\nmtu = 1492          # PPPoE: tunnel MTU 1452, TCP MSS 1412\n", "")
    msg = refused(variant(tmp_path, 'br = ["', 'wan = 5\nbr = ["', text))
    assert "wan = 5 must be a table: write [wan] on a line of its own" in msg


def test_a_missing_required_table(tmp_path: Path) -> None:
    text = COSMOTE.split("[dhcp]")[0] + "[wan]\nmtu = 1500\n"
    path = tmp_path / "s.toml"
    path.write_text(text)
    assert "missing a [dhcp] table" in refused(path)


def test_two_rules_with_one_ipv6_prefix_are_refused(tmp_path: Path) -> None:
    second = '[[rule]]\nipv6 = "2001:db8:6200::/42"\nipv4 = "203.0.113.0/24"\nea_len = 14\n\n[dhcp]'
    msg = refused(variant(tmp_path, "[dhcp]", second))
    assert "[[rule]] #2" in msg and "also rule #1's" in msg and "ambiguous" in msg


def test_a_pool_prefix_without_a_usable_port_is_refused(tmp_path: Path) -> None:
    """a = 0, k = 16, PSID 0: the only port is 0, which is never used."""
    text = (scenario.SCENARIO_DIR / "explicit-psid.toml").read_text()
    path = variant(tmp_path, "portparams = { offset = 6, psid_len = 8, psid = 0x34 }",
                   "portparams = { offset = 0, psid_len = 16, psid = 0 }", text)
    assert "no usable port" in refused(path)


def test_every_shipped_scenario_passes_the_schema() -> None:
    names = sorted(p.stem for p in scenario.SCENARIO_DIR.glob("*.toml"))
    assert [s.path.stem for s in scenario.all_scenarios()] == names and len(names) >= 8
