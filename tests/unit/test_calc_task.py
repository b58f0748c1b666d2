"""`invoke mape.calc` as a user runs it: real processes, real exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(TOP)]


def calc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVOKE, "mape.calc", *args], capture_output=True, text=True, timeout=60)


def test_issue_interface_json() -> None:
    r = calc("--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "16", "--offset", "6",
             "--prefix", "2001:db8:12:3400::/56", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ipv4"] == "192.0.2.18" and out["psid"] == 0x34 and out["psid_len"] == 8
    assert out["psid_offset"] == 6 and out["port_count"] == 252
    assert out["port_ranges"][0] == [1232, 1235] and len(out["port_ranges"]) == 63
    assert out["map_address"] == "2001:db8:12:3400:0:c000:212:34" and out["br"] is None


def test_scenario_text_and_json() -> None:
    r = calc("--scenario", "cosmote-like")
    assert r.returncode == 0, r.stderr
    assert "198.51.100.1" in r.stdout and "map-e-portset 6/6/2" in r.stdout and "mtu 1452" in r.stdout
    j = json.loads(calc("--scenario", str(TOP / "scenarios" / "cosmote-like.toml"), "--json").stdout)
    assert j["br"] == "2001:db8:ffff::1" and j["port_count"] == 1008 and len(j["port_ranges"]) == 63
    j2 = json.loads(calc("--scenario", "cosmote-like", "--prefix", "2001:db8:6200:4300::/56", "--json").stdout)
    assert j2["psid"] == 3 and j2["ipv4"] == "198.51.100.1"


def test_option94_with_and_without_header() -> None:
    whole = ("005e002d00590015001018c00002002820010db800005d000406000000"
             "005a001020010db8ffff00000000000000000001")
    for hexarg in (whole, whole[8:]):
        r = calc("--option94", hexarg, "--prefix", "2001:db8:12:3400::/56", "--json")
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert j["psid"] == 0x34 and j["br"] == "2001:db8:ffff::1"


def test_ipv4_prefix_output() -> None:
    r = calc("--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "10.0.0.0/8", "--ea-len", "8",
             "--prefix", "2001:db8:ab::/48", "--json")
    assert json.loads(r.stdout)["ipv4"] == "10.171.0.0/16"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "49",
          "--prefix", "2001:db8:12:3400::/56"], "ea-len 49"),
        (["--rule-ipv6", "2001:db8::1/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "16",
          "--prefix", "2001:db8:12:3400::/56"], "'2001:db8::1/40'"),
        (["--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "16",
          "--prefix", "2001:db8:12::/48"], "/48"),
        (["--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "16", "--offset", "6",
          "--psid-len", "11", "--prefix", "2001:db8:12:3400::/56"], "psid-len 11"),
        (["--option94", "005e0004zz", "--prefix", "2001:db8:12:3400::/56"], "not hex"),
        (["--option94", "005e0008005a000420010db8", "--prefix", "2001:db8:12:3400::/56"], "at byte 8"),
        (["--scenario", "no-such-scenario"], "no-such-scenario"),
        (["--rule-ipv6", "2001:db8::/40"], "need --rule-ipv6, --rule-ipv4 and --ea-len"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(args: list[str], needle: str) -> None:
    r = calc(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mape.calc: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_openbsd_lines_are_what_pfctl_accepts() -> None:
    """The "OpenBSD CE:" section comes from mapelab.openbsd.ceconf: every piece, nothing pfctl refuses."""
    cosmote = calc("--scenario", "cosmote-like")
    assert cosmote.returncode == 0, cosmote.stderr
    ce = cosmote.stdout.split("OpenBSD CE:\n", 1)[1]
    for needle in ("ifconfig <wan> inet6 2001:db8:6200:4200:0:c633:6401:2 prefixlen 128 alias",
                   "ifconfig gif0 inet 198.51.100.1 0.0.0.1 netmask 255.255.255.255",
                   "route -n add -inet default 0.0.0.1", "scrub (max-mss 1412)",
                   "nat-to (gif0) map-e-portset 6/6/2", "proto ipencap from 2001:db8:ffff::1"):
        assert needle in ce, needle
    offset0 = calc("--scenario", "offset0").stdout.split("OpenBSD CE:\n", 1)[1]
    assert "nat-to (gif0) port 13312:13567" in offset0 and "map-e-portset 0/" not in offset0
    assert "# unsupported: pf widens ICMP echo ids" in offset0
    k0 = calc("--scenario", "k0-full-address").stdout.split("OpenBSD CE:\n", 1)[1]
    assert "nat-to (gif0)\n" in k0 and "map-e-portset" not in k0


EX5 = ["--rule-ipv6", "2001:db8:12:3400::/56", "--rule-ipv4", "192.0.2.18/32", "--ea-len", "0", "--offset", "6",
       "--psid-len", "8", "--prefix", "2001:db8:12:3400::/56"]


def test_psid_and_psid_wire_give_the_same_port_set_and_both_are_printed() -> None:
    """--psid is right-aligned (0x34); option 93's field, and mapcalc's psid=, is left-aligned (0x3400)."""
    right = json.loads(calc(*EX5, "--psid", "0x34", "--json").stdout)
    wire = json.loads(calc(*EX5, "--psid-wire", "0x3400", "--json").stdout)
    assert right == wire and right["psid"] == 0x34 and right["psid_wire"] == 0x3400
    assert right["port_ranges"][0] == [1232, 1235]
    text = calc(*EX5, "--psid-wire", "13312").stdout
    assert "PSID 52 (0x34, right-aligned" in text and "left-aligned: 0x3400" in text


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--psid-wire", "0x34"], "--psid-wire 0x0034: its low 8 bits are not zero"),  # the right-aligned value
        (["--psid", "0x34", "--psid-wire", "0x3400"], "not both"),
        (["--psid-wire", "0x10000"], "16 bits"),
    ],
)
def test_psid_wire_is_unambiguous(extra: list[str], needle: str) -> None:
    r = calc(*EX5, *extra)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_psid_wire_needs_a_psid_length() -> None:
    r = calc("--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "16",
             "--prefix", "2001:db8:12:3400::/56", "--psid-wire", "0x3400")
    assert r.returncode == 2 and "--psid-wire needs --psid-len" in r.stderr


def test_no_usable_port_is_refused() -> None:
    """a = 0, k = 16, PSID 0: the set is {0}, and port 0 is never used — exit 2, not 0 ports and exit 0."""
    args = ["--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "8", "--offset", "0",
            "--psid-len", "16", "--prefix", "2001:db8:12::/48"]
    r = calc(*args, "--psid", "0")
    assert r.returncode == 2 and "--psid: " in r.stderr and "no usable port" in r.stderr, r.stderr
    ok = calc(*args, "--psid", "1")
    assert ok.returncode == 0 and "1 range of 1 port = 1 usable: 1" in ok.stdout


def test_text_grammar() -> None:
    r = calc("--rule-ipv6", "2001:db8::/40", "--rule-ipv4", "192.0.2.0/24", "--ea-len", "8", "--offset", "0",
             "--psid-len", "6", "--psid", "0", "--prefix", "2001:db8:12::/48")
    assert "1 range of 1024 ports = 1023 usable: 1-1023" in r.stdout, r.stdout
    assert "63 ranges of 16 ports = 1008 usable" in calc("--scenario", "cosmote-like").stdout


def test_a_typo_in_a_scenario_names_the_nearest_key(tmp_path: Path) -> None:
    text = (TOP / "scenarios" / "cosmote-like.toml").read_text().replace("mtu = 1492", "mut = 1492")
    (tmp_path / "mut.toml").write_text(text)
    r = calc("--scenario", str(tmp_path / "mut.toml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"mape.calc: --scenario {tmp_path / 'mut.toml'} [wan]: unknown key 'mut' " \
                               "(did you mean 'mtu'?)"


def test_rules_off_the_wire_with_one_ipv6_prefix_get_a_note() -> None:
    """Two rules for 2001:db8::/40 in one option 94 (a scenario would be refused): the first wins, visibly."""
    from ipaddress import IPv4Network, IPv6Address, IPv6Network

    from mapelab.mape import Container, PortParams, Rule, encode_container
    from mapelab.mape.codec import BorderRelay

    rules = tuple(Rule(IPv6Network("2001:db8::/40"), IPv4Network(v4), 16, PortParams(6, 0, 0))
                  for v4 in ("192.0.2.0/24", "198.51.100.0/24"))
    raw = encode_container(Container(94, (*rules, BorderRelay(IPv6Address("2001:db8:ffff::1"))))).hex()
    j = json.loads(calc("--option94", raw, "--prefix", "2001:db8:12:3400::/56", "--json").stdout)
    assert j["ipv4"] == "192.0.2.18" and any("RFC 7597 leaves the tie open" in n for n in j["notes"])
