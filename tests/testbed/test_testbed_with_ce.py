"""The testbed carries real MAP-E traffic: the reference Linux CE (mapelab.ce) in both slots, the BR,
and the internet's records of what arrived — the path the e2e suite takes, at its smallest."""

from __future__ import annotations

import importlib.util
import time

import pytest

from mapelab import scenario as scenario_mod
from tests.testbed.testbed_fixture import br_available, in_ns, make_testbed, runs_root  # noqa: F401


def test_two_ces_through_the_br(make_testbed) -> None:  # noqa: F811
    if importlib.util.find_spec("mapelab.ce") is None or not br_available():
        pytest.skip("needs the reference CE (mapelab.ce) and the BR (mapelab.testbed.br)")
    from mapelab.ce import create

    scn = scenario_mod.load("cosmote-like")
    tb = make_testbed("cosmote-like")
    ces = []
    try:
        for slot in tb.status.slots:
            ce = create("linux", slot, state_dir=tb.run_dir / f"ce{slot.index}")
            ce.start()
            ces.append(ce)
        # Both CEs solicit at once, so either may get the pool's first prefix: match by what each got.
        pool = scn.delegated_prefixes(2)
        params = []
        for ce in ces:
            got = ce.wait_provisioned(30)
            assert got.delegated_prefix in pool, (got.delegated_prefix, pool)
            assert got.differences(scn.derive(got.delegated_prefix)) == []
            params.append(scn.derive(got.delegated_prefix))
        assert params[0].delegated_prefix != params[1].delegated_prefix
        for p in params:  # the ISP routes each prefix, and its log says "installed" because ip said so
            via = tb.wait_delegated(str(p.delegated_prefix))
            assert f"route {p.delegated_prefix} via {via} installed" in (tb.run_dir / "events.log").read_text()
            shown = in_ns(tb.status.isp_netns, "ip", "-6", "route", "show", str(p.delegated_prefix))
            assert f"via {via}" in shown, shown
        for i, p in enumerate(params, start=1):
            before = len(tb.flows())
            for mode in ("tcp", "udp", "ping"):
                res = tb.lan_client(i, mode, count=3, timeout=5)
                assert res["ok"] == 3, res
            time.sleep(0.1)
            new = tb.flows()[before:]
            assert len([f for f in new if f["event"] != "close"]) == 9
            # the shared address, and every source port / echo id inside this CE's port set
            assert all(f["src"] == str(p.ipv4) and f["sport"] in p.port_set for f in new), new
        bulk = tb.lan_client(1, "bulk", count=1, size=4_000_000, timeout=20)
        assert bulk["ok"] == 1, bulk
    finally:
        for ce in ces:
            ce.teardown()
