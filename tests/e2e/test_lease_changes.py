"""DHCPv6 lease changes on a testbed of their own (short timers: T1 4 s), one per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mapelab.e2e import checks
from mapelab.scenario import Scenario

from .conftest import Site

pytestmark = pytest.mark.needs("lease")


@pytest.mark.claim("renumbering")
def test_renumbered_prefix_moves_everything_within_t1(scenario: Scenario, fresh_site: Callable[..., Site]) -> None:
    s = fresh_site(scenario)
    after, took = checks.check_renumbering(s.bed, s.ces[0], s.scenario, s.params[0])
    assert after.delegated_prefix != s.params[0].delegated_prefix
    assert took <= s.scenario.dhcp.t1 + 6


@pytest.mark.claim("withdrawal")
def test_option94_withdrawn_tears_ipv4_down(scenario: Scenario, fresh_site: Callable[..., Site]) -> None:
    s = fresh_site(scenario)
    took = checks.check_withdrawal(s.bed, s.ces[0], s.scenario)
    assert took <= s.scenario.dhcp.t1 + 6


@pytest.mark.claim("renewal")
def test_unchanged_renewal_does_not_interrupt_a_download(scenario: Scenario, fresh_site: Callable[..., Site]
                                                         ) -> None:
    s = fresh_site(scenario)
    checks.check_unchanged_renewal(s.bed, s.ces[0], s.params[0])
