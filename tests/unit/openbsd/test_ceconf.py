"""The OpenBSD CE renderer: byte-for-byte expected files, and what pf can and cannot express."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from mapelab import scenario
from mapelab.mape import PortParams, PortSet, Rule, derive
from mapelab.openbsd import ceconf

from . import ce_renders

LAN = (IPv4Network("192.168.1.0/24"),)


@pytest.mark.parametrize(("scenario_name", "profile_name"), ce_renders.CASES)
def test_renders_byte_for_byte(scenario_name: str, profile_name: str) -> None:
    """Regenerate with `.venv/bin/python -m tests.unit.openbsd.ce_renders` after a deliberate change."""
    got = ce_renders.render(scenario_name, profile_name)
    d = ce_renders.DATA / scenario_name / profile_name
    expected = {p.name: p.read_text() for p in d.iterdir()}
    assert sorted(got) == sorted(expected)
    for name, text in got.items():
        assert text == expected[name], f"{d / name} differs; regenerate and review (see ce_renders.py)"


def _pfctl_accepts_portset(option: str) -> bool:
    """pfctl's checks of mape79 parse.y (pool_opts MAPEPORTSET) and pfail68.ok, restated."""
    a, k, psid = (int(x) for x in option.removeprefix("map-e-portset ").split("/"))
    return 1 <= a <= 15 and 1 <= k <= 16 - a and 0 <= psid < (1 << k)


def _params(offset: int, k: int, psid: int):
    base = scenario.load("rfc7597-example1").derive()
    return dataclasses.replace(base, psid_offset=offset, psid_len=k, psid=psid, port_set=PortSet(offset, k, psid))


def test_nat_plan_is_exact_and_pfctl_accepts_it_for_every_offset_and_length() -> None:
    seen = set()
    for a in range(16):
        for k in range(17 - a):
            for psid in {0, (1 << k) - 1, (1 << k) // 3}:
                p = _params(a, k, psid)
                if not p.port_set.ranges():  # a = 0, k = 16, PSID 0: only port 0, never usable
                    with pytest.raises(ceconf.CannotRender, match="no usable port"):
                        ceconf.nat_plan(p)
                    continue
                plan = ceconf.nat_plan(p)
                seen.add(plan.method)
                if plan.method == "map-e-portset":
                    assert _pfctl_accepts_portset(plan.option), plan
                    assert a >= 1 and k >= 1
                elif plan.method == "port-range":
                    assert a == 0 and k >= 1
                    lo, _, hi = plan.option.removeprefix("port ").partition(":")
                    ports = set(range(int(lo), int(hi or lo) + 1))
                    assert ports == set(p.port_set), (a, k, psid)
                else:
                    assert k == 0 and plan.option == ""
                assert "map-e-portset 0/" not in plan.option and not plan.option.endswith("/0/0")
    assert seen == {"map-e-portset", "port-range", "plain"}


def test_offset0_renders_port_range_and_says_icmp_ids_escape() -> None:
    cfg = ceconf.render(scenario.load("offset0").derive(), ceconf.Site("vio1", LAN))
    assert "nat-to (gif0) port 13312:13567" in cfg.anchor_text and "map-e-portset" not in cfg.anchor_text
    u = cfg.unsupported("icmp-echo-ids-in-set")
    assert u is not None and str(u).startswith("unsupported: pf widens ICMP echo ids")
    assert ceconf.render(scenario.load("cosmote-like").derive(), ceconf.Site("vio1", LAN)).limitations == ()


def test_rules_and_commands_carry_every_piece() -> None:
    p = scenario.load("cosmote-like").derive()
    lans = (IPv4Network("192.168.1.0/24"), IPv4Network("10.20.0.0/16"))
    cfg = ceconf.render(p, ceconf.Site("pppoe0", lans, wan_mtu=1492))
    assert cfg.tunnel_mtu == 1452 and cfg.mss == 1412
    lines = cfg.anchor_text.splitlines()
    assert lines[0] == "match on gif0 inet proto tcp scrub (max-mss 1412)"
    nat = [ln for ln in lines if "nat-to" in ln]
    assert [ln.split(" from ")[1].split(" to ")[0] for ln in nat] == ["(gif0)", "192.168.1.0/24", "10.20.0.0/16"]
    assert all(ln.endswith("nat-to (gif0) map-e-portset 6/6/2") for ln in nat)
    encap = [ln for ln in lines if "ipencap" in ln]
    assert encap == [
        "pass out quick on pppoe0 inet6 proto ipencap from 2001:db8:6200:4200:0:c633:6401:2 to 2001:db8:ffff::1",
        "pass in quick on pppoe0 inet6 proto ipencap from 2001:db8:ffff::1 to 2001:db8:6200:4200:0:c633:6401:2",
    ]
    assert not [ln for ln in lines if ln.startswith("pass in") and "ipencap" not in ln], "no blanket inbound pass"
    argv = [c.argv for c in cfg.apply]
    assert ("ifconfig", "pppoe0", "inet6", str(p.map_address), "prefixlen", "128", "alias") in argv
    assert ("ifconfig", "gif0", "inet", "198.51.100.1", "0.0.0.1", "netmask", "255.255.255.255") in argv
    assert ("route", "-n", "add", "-inet", "default", "0.0.0.1") in argv
    assert cfg.apply[-1].argv == ("pfctl", "-a", "mape", "-f", "-") and cfg.apply[-1].stdin == cfg.anchor_text
    # withdrawal undoes in reverse: rules first, the WAN alias last
    assert cfg.withdraw[0].argv[:3] == ("pfctl", "-a", "mape") and cfg.withdraw[-1].argv[-1] == "delete"


def test_ipv4_prefix_ce_uses_the_first_address_and_plain_nat() -> None:
    rule = Rule(IPv6Network("2001:db8::/40"), IPv4Network("10.0.0.0/8"), 8)
    p = derive(rule, IPv6Network("2001:db8:ab::/48"), IPv6Address("2001:db8:ffff::1"))
    assert p.ipv4_text == "10.171.0.0/16"
    cfg = ceconf.render(p, ceconf.Site("vio1", LAN))
    assert ("ifconfig", "gif0", "inet", "10.171.0.0", "0.0.0.1", "netmask", "255.255.255.255") in [
        c.argv for c in cfg.apply]
    assert cfg.nat.method == "plain" and "map-e-portset" not in cfg.anchor_text


def test_forwarding_rule_is_hub_and_spoke_with_a_reason() -> None:
    rule = Rule(IPv6Network("2001:db8::/40"), IPv4Network("192.0.2.0/24"), 16, PortParams(6, 0, 0), forwarding=True)
    p = derive(rule, IPv6Network("2001:db8:12:3400::/56"), IPv6Address("2001:db8:ffff::1"))
    cfg = ceconf.render(p, ceconf.Site("vio1"))
    u = cfg.unsupported("forwarding-mapping-rule")
    assert u is not None and "through the BR" in u.reason
    assert "tunnel 2001:db8:12:3400:0:c000:212:34 2001:db8:ffff::1" in cfg.apply_script()


def test_cannot_render_without_br_or_with_an_mtu_gif_refuses() -> None:
    p = dataclasses.replace(scenario.load("cosmote-like").derive(), br=None)
    with pytest.raises(ceconf.CannotRender) as e:
        ceconf.render(p, ceconf.Site("vio1"))
    assert e.value.unsupported.what == "no-br" and str(e.value).startswith("unsupported: ")
    with pytest.raises(ceconf.CannotRender, match=r"gif\(4\) needs 1280\.\.8192"):
        ceconf.Site("vio1", wan_mtu=1300)
    with pytest.raises(ValueError, match="plain name"):
        ceconf.Site("vio1; reboot")


def test_dhcp6leased_conf_grammar_and_hook() -> None:
    assert ceconf.dhcp6leased_conf("vio1", ["vio2", "vio3"], request_mape=True) == (
        "request prefix delegation on vio1 for { vio2/64 vio3/64 }\nrequest mape on vio1\n")
    assert "mape" not in ceconf.dhcp6leased_conf("vio1", ["vio2"], request_mape=False)
    assert ceconf.pf_conf_hook() == 'anchor "mape"\nload anchor "mape" from "/etc/pf.anchors/mape"\n'


def test_calc_lines_without_br_say_so() -> None:
    p = dataclasses.replace(scenario.load("offset0").derive(), br=None)
    lines = ceconf.calc_lines(p, 1500)
    assert "ifconfig gif0 tunnel 2001:db8:112:3400:0:cb00:7112:34 <BR>" in lines
    assert any(ln.startswith("# for each LAN network") and "port 13312:13567" in ln for ln in lines)
    assert any(ln.startswith("# unsupported: pf widens ICMP echo ids") for ln in lines)
    assert IPv4Address("203.0.113.18") == p.ipv4
