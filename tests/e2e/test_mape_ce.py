"""Does this CE do MAP-E correctly?  The verdict, one claim per test, on a long-lived testbed per scenario.

Every check is in :mod:`mapelab.e2e.checks`; ``test_checks_fail.py`` proves each can fail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mapelab.e2e import checks
from mapelab.scenario import Scenario

from .conftest import Site


@pytest.mark.claim("provisioning")
def test_provisioning_equals_the_model(site: Site) -> None:
    for p in site.params:
        checks.check_provisioning(site.scenario, p, site.bed)


@pytest.mark.claim("connectivity")
def test_tcp_udp_icmp_reach_the_internet_and_back(site: Site) -> None:
    for ce in site.ces:
        checks.check_connectivity(site.bed, ce)


@pytest.mark.claim("port-set")
def test_every_source_port_is_in_the_port_set(site: Site, record_ports: Callable[[str, list[int]], None]) -> None:
    """At least 500 flows (or the whole set): every port and echo id the internet saw is in the set."""
    for i, (ce, p) in enumerate(zip(site.ces, site.params, strict=True)):
        ports = checks.check_port_set(site.bed, ce, p)
        record_ports(site.name(i), ports)
        assert len(ports) >= checks.port_set_flows(p)


@pytest.mark.claim("mtu")
def test_10mb_download_through_the_tunnel(site: Site) -> None:
    """With DF (Linux TCP) through the scenario's WAN MTU (1492 cosmote-like, 1500 Example 1)."""
    result = checks.check_bulk_download(site.bed, site.ces[0])
    assert result["bytes"] == 10_000_000


@pytest.mark.claim("mtu")
def test_large_udp_datagram_is_fragmented_per_rfc2473(site: Site) -> None:
    checks.check_large_udp(site.bed, site.ces[0])


@pytest.mark.needs("small_set")
@pytest.mark.claim("exhaustion")
def test_exhaustion_stays_inside_the_set_and_recovers(scenario: Scenario, fresh_site: Callable[..., Site],
                                                      record_ports: Callable[[str, list[int]], None]) -> None:
    s = fresh_site(scenario)  # no earlier flows holding ports
    result = checks.check_exhaustion(s.bed, s.ces[0], s.params[0])
    assert result["distinct_ports"] <= result["set_size"] < result["offered"]


@pytest.mark.needs("shared_address")
@pytest.mark.claim("shared-address")
def test_two_ces_share_one_address_with_disjoint_ports(site: Site) -> None:
    assert len(site.ces) >= 2, "the shared-address test needs two CE slots"
    checks.check_shared_address(site.bed, site.ces[0], site.params[0], site.ces[1], site.params[1])


def test_br_anti_spoofing_counts_only_spoofed_packets(site: Site) -> None:
    counts = checks.check_antispoof(site.bed, site.ces[0], site.params[0])
    assert all(n >= 3 for n in counts.values())
