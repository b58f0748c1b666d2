"""The reference CE's nftables table rendered from the model: one NAT rule, one map element per range."""

from __future__ import annotations

import re

import pytest

from mapelab import scenario as scenarios
from mapelab.ce.daemon.nat import NatPlan, render, render_delete
from mapelab.mape import MapeParams

PLAN = NatPlan("mape0", 1452)


def params(name: str) -> MapeParams:
    return scenarios.load(name).derive()


def psmap_elements(text: str) -> list[tuple[int, str, int, int]]:
    block = text[text.index("map psmap") :]
    block = block[: block.index("}\n")]
    return [(int(i), a, int(lo), int(hi)) for i, a, lo, hi in re.findall(r"(\d+) : ([\d.]+) \. (\d+)-(\d+)", block)]


@pytest.mark.parametrize("name", ["cosmote-like", "rfc7597-example1", "k12-small-set", "offset0", "k10-single-ports"])
def test_one_map_element_per_range_and_exactly_the_port_set(name: str) -> None:
    p = params(name)
    text = render(p, PLAN)
    elems = psmap_elements(text)
    assert [(lo, hi) for _, _, lo, hi in elems] == p.port_set.ranges()
    assert [i for i, *_ in elems] == list(range(len(elems)))
    assert {a for _, a, _, _ in elems} == {str(p.ipv4)}
    ports = {port for *_, lo, hi in elems for port in range(lo, hi + 1)}
    assert ports == set(p.port_set)
    n = len(p.port_set.ranges())
    assert text.count("snat ip to numgen") == 1
    assert f"typeof numgen inc mod {n} : interval ip saddr . th sport" in text
    assert f"snat ip to numgen inc mod {n} map @psmap" in text and text.count('comment "nat-port-set"') == 1


def test_cosmote_mss_clamp_and_guard() -> None:
    text = render(params("cosmote-like"), PLAN)
    assert "maxseg size set 1412" in text
    assert 'ip saddr != 198.51.100.1 counter drop comment "egress-wrong-address"' in text
    assert "th sport != @ports" in text and "icmp id != @echoids" in text
    assert text.startswith("table ip mapece\ndelete table ip mapece\n"), "atomic replace in one transaction"


def test_k0_is_plain_snat_without_port_sets() -> None:
    p = params("k0-full-address")
    assert not p.port_set.restricted
    text = render(p, PLAN)
    assert "psmap" not in text and "@ports" not in text
    assert f'oifname "mape0" counter snat ip to {p.ipv4} comment "nat-address"' in text


def test_faults_break_what_they_name() -> None:
    p = params("cosmote-like")
    whole = render(p, NatPlan("mape0", 1452, ("nat-whole-range",)))
    assert "psmap" not in whole.split("chain postrouting")[1] and "1024-65535" in whole
    assert "chain guard" not in whole
    assert "maxseg" not in render(p, NatPlan("mape0", 1452, ("no-mss-clamp",)))


def test_delete_is_idempotent_form() -> None:
    assert render_delete() == "table ip mapece\ndelete table ip mapece\n"
