"""Tests of the tests: each e2e check fails when what it checks is broken.

A CE that NATs to the whole port range must fail the port-set check, a BR without anti-spoofing
must fail the spoofing check, a CE that ignores renumbering must fail the lease-change check.
The breakage is injected into the reference CE (its ``--fault`` options) and the BR
(``--no-antispoof``), so these run with the linux backend only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mapelab.e2e import checks
from mapelab.scenario import Scenario

from .conftest import Site

pytestmark = pytest.mark.needs("lease")


@pytest.fixture(autouse=True)
def _linux_only(backend: str) -> None:
    if backend != "linux":
        pytest.skip(f"faults can be injected only into the reference CE (backend linux), not {backend}")


def test_port_set_check_fails_for_whole_range_nat(scenario: Scenario, fresh_site: Callable[..., Site]) -> None:
    s = fresh_site(scenario, ce_options={"faults": ["nat-whole-range"]})
    with pytest.raises(checks.CheckFailed, match="outside the port set"):  # seen by the BR or the internet
        checks.check_port_set(s.bed, s.ces[0], s.params[0], floor=100)


def test_spoof_check_fails_for_br_without_antispoofing(scenario: Scenario, fresh_site: Callable[..., Site]
                                                       ) -> None:
    s = fresh_site(scenario, br_antispoof=False)
    with pytest.raises(checks.CheckFailed, match="were not dropped by the BR"):
        checks.check_antispoof(s.bed, s.ces[0], s.params[0])


def test_renumbering_check_fails_for_ce_ignoring_it(scenario: Scenario, fresh_site: Callable[..., Site]) -> None:
    s = fresh_site(scenario, ce_options={"faults": ["ignore-renumbering"]})
    with pytest.raises(checks.CheckFailed):
        checks.check_renumbering(s.bed, s.ces[0], s.scenario, s.params[0])
