"""The gate's claims about the build itself: the CE runs the patched kernel and userland, the
firewall's consumers work against it, and the release it started from still boots.

Only a CE that runs an OS built by mapelab from a patch series (``os-build``) can prove these; any
other CE (the reference CE) reports them unsupported, with the reason — never passed.
"""

from __future__ import annotations

import pytest

from .conftest import Site


@pytest.mark.claim("boot")
def test_the_ce_runs_the_patched_build(site: Site) -> None:
    for ce in site.ces:
        evidence = ce.verify_running_build()
        assert evidence["kern.version"], evidence


@pytest.mark.claim("pf-consumers")
def test_firewall_and_its_consumers_work_against_the_patched_kernel(site: Site) -> None:
    evidence = site.ces[0].verify_firewall_consumers()
    failed = {prog: e for prog, e in evidence.items() if e.get("ok") is False}
    assert not failed, failed
    assert any(e.get("ok") for e in evidence.values()), f"no consumer could be probed: {evidence}"


@pytest.mark.claim("rollback")
def test_the_release_it_was_built_from_still_boots(site: Site) -> None:
    evidence = site.ces[0].verify_rollback()
    assert evidence.get("ruleset_loaded"), evidence
