"""Lease changes on demand (renumber, withdraw, change of BR) and the wire-error responder."""

from __future__ import annotations

import time
from ipaddress import IPv6Address, IPv6Network

import pytest

from mapelab import scenario as scenario_mod
from mapelab.mape import CodecError, decode_option94, derive, encode_container, mape_containers
from mapelab.testbed import responder
from mapelab.testbed.supervisor import TestbedError, renumber_pool
from tests.testbed.testbed_fixture import in_ns, make_testbed, probe, runs_root  # noqa: F401


def _wait(pred, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_renumber_gives_a_new_prefix_at_rebind(make_testbed) -> None:  # noqa: F811
    scn = scenario_mod.load("rfc7597-example1")
    tb = make_testbed("rfc7597-example1", br=False)
    old = IPv6Network(probe(tb)["reply"]["prefixes"][0]["prefix"])
    pool = IPv6Network(tb.renumber())
    assert pool != scn.dhcp.pd_pool
    got = probe(tb, 1, "--rebind", str(old))["rebind"]["prefixes"]
    new = [IPv6Network(p["prefix"]) for p in got if p["valid"] > 0]
    gone = [IPv6Network(p["prefix"]) for p in got if p["valid"] == 0]
    assert new and new[0].subnet_of(pool) and gone == [old]
    derive(scn.rules, new[0])  # still inside the rule: the CE can derive a new MAP address
    assert _wait(lambda: str(new[0]) in tb.status.extra["delegations"] and str(old) not in
                 tb.status.extra["delegations"])


def test_renumber_refuses_when_the_rule_has_no_room() -> None:
    with pytest.raises(TestbedError, match="no pool"):
        renumber_pool(scenario_mod.load("explicit-psid"), scenario_mod.load("explicit-psid").dhcp.pd_pool)


def test_withdraw_and_restore_option94(make_testbed) -> None:  # noqa: F811
    tb = make_testbed("cosmote-like", br=False)
    assert probe(tb)["reply"]["option94"]
    tb.withdraw()
    got = probe(tb)["reply"]
    assert got["option94"] == [] and got["prefixes"], "withdraw must keep the prefix, drop only option 94"
    tb.restore()
    assert probe(tb)["reply"]["option94"]


def test_change_br(make_testbed) -> None:  # noqa: F811
    tb = make_testbed("cosmote-like")
    new = tb.change_br("2001:db8:ffff::99")
    assert new == ["2001:db8:ffff::99"]
    c = decode_option94(bytes.fromhex(probe(tb)["reply"]["option94"][0]))
    assert c.brs == (IPv6Address("2001:db8:ffff::99"),)
    lo = in_ns(tb.status.isp_netns, "ip", "-6", "addr", "show", "dev", "lo")
    assert "2001:db8:ffff::99/128" in lo and "2001:db8:ffff::1/128" not in lo
    assert tb.status.br_address == IPv6Address("2001:db8:ffff::99")
    assert "2001:db8:ffff::99" in (tb.run_dir / "scenario.toml").read_text()


@pytest.mark.parametrize(
    "fault",
    ["truncated", "length+3", "length-2", "prefix-longer-than-bytes"],
)
def test_responder_sends_wire_errors(make_testbed, fault: str) -> None:  # noqa: F811
    scn = scenario_mod.load("rfc7597-example1")
    good = encode_container(scn.container())
    raw = {
        "truncated": responder.truncated(good),
        "length+3": responder.wrong_length(good, 3),
        "length-2": responder.wrong_length(good, -2),
        "prefix-longer-than-bytes": responder.rule_prefix_longer_than_bytes(),
    }[fault]
    tb = make_testbed("rfc7597-example1", br=False)
    tb.use_responder(raw.hex())
    assert tb.status.extra["dhcp_server"] == "responder"
    reply = probe(tb)["reply"]
    assert reply["prefixes"] == [{"prefix": str(scn.first_prefix()), "preferred": 40, "valid": 60}]
    assert reply["raw"].endswith(raw.hex()), "the bytes must go out verbatim"
    assert (reply["malformed"] is not None) == (fault != "prefix-longer-than-bytes"), reply["malformed"]
    with pytest.raises(CodecError):
        _good_c, discarded = mape_containers(raw)
        if discarded:
            raise discarded[0]
    tb.use_kea()
    assert decode_option94(bytes.fromhex(probe(tb)["reply"]["option94"][0])).options == scn.container().options
