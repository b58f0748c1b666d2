"""Topology, status contract, timing, teardown and the sweep after a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapelab.testbed import api
from mapelab.testbed import status as status_mod
from mapelab.testbed.proc import ProcRef
from tests.testbed.testbed_fixture import (  # noqa: F401
    REPO,
    br_available,
    in_ns,
    leftovers,
    make_testbed,
    require_testbed,
    runs_root,
)


def _procs(tb: api.Testbed) -> list[ProcRef]:
    rec = tb.record
    return [rec.owner, *rec.procs] if rec.owner else rec.procs


def test_up_is_fast_and_down_leaves_nothing(runs_root: Path) -> None:  # noqa: F811
    require_testbed()
    t0 = time.monotonic()
    tb = api.up("cosmote-like", log=lambda _: None)
    took = time.monotonic() - t0
    try:
        st = tb.status
        assert took < 5.0, f"testbed.up took {took:.2f} s"
        assert st.extra["br_running"] == br_available()
        procs = _procs(tb)
        assert all(p.alive() for p in procs)
        assert leftovers(st.prefix)
    finally:
        tb.down()
    assert leftovers(st.prefix) == []
    assert not any(p.alive() for p in procs)
    assert tb.record.state == "down"
    print(f"testbed.up cosmote-like: {took:.2f} s, supervisor timings {st.extra['timings']}")


def test_status_contract_names_and_addresses(make_testbed) -> None:  # noqa: F811
    tb = make_testbed("cosmote-like", br=False, vm_slots=(2,))
    st = tb.status
    again = status_mod.TestbedStatus.from_json((tb.run_dir / "status.json").read_text())
    assert again == st
    assert st.run_dir == tb.run_dir and len(st.prefix) == 7 and st.prefix.startswith("ml")
    names = [st.isp_netns, st.inet_netns]
    for s in st.slots:
        names += [n for n in (s.ce_netns, s.wan_if, s.lan_if, s.wan_tap, s.lan_tap, s.lan_netns) if n]
    assert all(n.startswith(st.prefix) and len(n) <= 15 for n in names)
    s1, s2 = st.slots
    assert (s1.kind, s2.kind) == ("netns", "vm") and s2.ce_netns is None and s2.wan_tap and s2.lan_tap
    assert Path(f"/sys/class/net/{s2.wan_tap}").exists() and Path(f"/sys/class/net/{s2.lan_tap}").exists()
    assert s1.wan_mtu == 1492
    assert "mtu 1492" in in_ns(s1.ce_netns, "ip", "link", "show", s1.wan_if)
    # the LAN host is addressed and routes via the (future) CE gateway
    assert str(s1.lan_host) in in_ns(s1.lan_netns, "ip", "-4", "addr")
    assert f"default via {s1.lan_gateway}" in in_ns(s1.lan_netns, "ip", "route")
    # the CE's WAN gets a default route from the ISP's router advertisements
    for _ in range(100):
        if "default via fe80" in in_ns(s1.ce_netns, "ip", "-6", "route"):
            break
        time.sleep(0.05)
    assert "default via fe80" in in_ns(s1.ce_netns, "ip", "-6", "route")
    # the internet's addresses are not in any scenario's rule space
    assert all(str(a).startswith("100.6") for a in st.inet_addresses)
    # the JSON the task prints is the same contract
    out = subprocess.run([sys.executable, "-m", "invoke", "testbed.status", "--json", "--run", st.run_id],
                         capture_output=True, text=True, cwd=str(REPO), env=os.environ.copy())
    printed = status_mod.TestbedStatus.from_json(out.stdout)
    assert printed.slots == st.slots and printed.extra["state"] == "up", out.stderr
    prefix = st.prefix
    tb.down()
    assert leftovers(prefix) == []


def test_inet_records_every_flow(make_testbed) -> None:  # noqa: F811
    """From the ISP node (no CE needed): TCP echo, UDP echo, ping and bulk are answered and recorded."""
    tb = make_testbed("cosmote-like", br=False)
    st = tb.status
    for mode in ("tcp", "udp", "ping", "bulk"):
        out = subprocess.run(
            ["ip", "netns", "exec", st.isp_netns, sys.executable, "-m", "mapelab.testbed.lanclient", mode,
             "--target", "100.65.0.2", "--count", "3", "--size", "100000"],
            capture_output=True, text=True, cwd=str(REPO), timeout=60,
        )
        res = json.loads(out.stdout)
        assert res["ok"] == 3, res
        want = {"tcp": ("tcp", "echo"), "udp": ("udp", "echo"), "ping": ("icmp", "ping"), "bulk": ("tcp", "bulk")}
        proto, service = want[mode]
        time.sleep(0.1)
        seen = {f["sport"] for f in tb.flows(proto=proto, service=service, src="100.64.0.1", dst="100.65.0.2")}
        assert {f["sport"] for f in res["flows"]} <= seen
    bulk_close = tb.flows(service="bulk", event="close")
    assert bulk_close and all(f["bytes_out"] == 100000 for f in bulk_close)


def test_lan_client_api_reports_failures(make_testbed) -> None:  # noqa: F811
    """With no CE in the slot the LAN host has no way out: every flow fails, and each says so."""
    tb = make_testbed("cosmote-like", br=False)
    res = tb.lan_client(1, "udp", count=2, timeout=0.5)
    assert res["count"] == 2 and res["ok"] == 0 and all(f["error"] for f in res["flows"])


def test_state_dump(make_testbed) -> None:  # noqa: F811
    tb = make_testbed("cosmote-like", br=False)
    path = tb.dump_state("test")
    text = path.read_text()
    assert f"ip -n {tb.status.isp_netns} addr" in text and "nft list ruleset" in text


def test_attached_testbed_dies_with_its_caller(runs_root: Path) -> None:  # noqa: F811
    """attach=True (fixtures): when the caller is killed, the supervisor tears down by itself."""
    require_testbed()
    code = ("import sys,time; from mapelab.testbed import api; tb=api.up('cosmote-like', br=False, log=print); "
            "print('RUN', tb.run_dir, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                         env=os.environ.copy())
    try:
        line = ""
        while not line.startswith("RUN"):
            line = p.stdout.readline()  # type: ignore[union-attr]
            assert line, "the child did not bring a testbed up"
        run_dir = Path(line.split()[1])
    finally:
        p.kill()
        p.wait()
    tb = api.Testbed(run_dir)
    prefix = tb.record.prefix
    for _ in range(200):
        if tb.record.state == "down":
            break
        time.sleep(0.05)
    assert tb.record.state == "down"
    assert leftovers(prefix) == []


def test_kill9_then_next_run_sweeps_and_says_so(runs_root: Path) -> None:  # noqa: F811
    require_testbed()
    tb = api.up("cosmote-like", attach=False, log=lambda _: None)
    prefix = tb.record.prefix
    procs = _procs(tb)
    owner = tb.record.owner
    assert owner is not None
    os.kill(owner.pid, signal.SIGKILL)
    for _ in range(100):
        if not owner.alive():
            break
        time.sleep(0.02)
    assert leftovers(prefix), "a killed supervisor leaves its namespaces behind"
    said: list[str] = []
    tb2 = api.up("cosmote-like", br=False, log=said.append)
    try:
        assert any(tb.run_dir.name in s and prefix in s for s in said), said
        assert leftovers(prefix) == []
        assert not any(p.alive() for p in procs)
        assert tb.record.state == "swept"
        assert leftovers(tb2.record.prefix)  # the new run is untouched
    finally:
        tb2.down()
    assert leftovers(tb2.record.prefix) == []


def test_sweep_leaves_live_and_foreign_runs_alone(make_testbed, runs_root: Path) -> None:  # noqa: F811
    from mapelab.testbed.runs import sweep

    tb = make_testbed("cosmote-like", br=False)
    foreign = runs_root / "not-a-run"
    foreign.mkdir(exist_ok=True)
    (foreign / "notes.txt").write_text("no run record here")
    assert sweep(runs_root, log=lambda _: None) == []
    assert leftovers(tb.record.prefix)
    assert foreign.exists()


def test_missing_scenario_and_bad_slots_fail_clearly(runs_root: Path) -> None:  # noqa: F811
    require_testbed()
    from mapelab.scenario import ScenarioError
    from mapelab.testbed.supervisor import TestbedError

    with pytest.raises(ScenarioError, match="known scenarios"):
        api.up("no-such-scenario")
    with pytest.raises(TestbedError, match="vm slots"):
        api.up("cosmote-like", vm_slots=(5,))


def test_sigterm_to_the_supervisor_tears_down(runs_root: Path) -> None:  # noqa: F811
    require_testbed()
    tb = api.up("cosmote-like", br=False, attach=False, log=lambda _: None)
    prefix, procs, owner = tb.record.prefix, _procs(tb), tb.record.owner
    assert owner is not None
    os.kill(owner.pid, signal.SIGTERM)
    for _ in range(200):
        if tb.record.state == "down" and not owner.alive():
            break
        time.sleep(0.02)
    assert tb.record.state == "down" and leftovers(prefix) == []
    assert not any(p.alive() for p in procs)


def test_a_failed_start_dumps_state_and_cleans_up(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    require_testbed()
    from mapelab.testbed.supervisor import TestbedError

    monkeypatch.setenv("MAPELAB_KEA", "/bin/false")  # Kea "starts" and exits at once
    with pytest.raises(TestbedError, match="kea-dhcp6 exited") as err:
        api.up("cosmote-like", br=False, log=lambda _: None)
    run_dir = Path(str(err.value).split("run directory ")[1].split(":")[0])
    tb = api.Testbed(run_dir)
    assert tb.record.state == "failed" and "kea-dhcp6 exited" in tb.record.data["error"]
    assert "ip -n" in (run_dir / "state-dump.txt").read_text()
    assert leftovers(tb.record.prefix) == []


def test_pcap_per_link(make_testbed) -> None:  # noqa: F811
    tb = make_testbed("rfc7597-example1", br=False, pcap=True)
    names = {p.name for p in tb.record.procs}
    assert {"tcpdump-wan", "tcpdump-isp-inet", "tcpdump-lan1"} <= names
    from tests.testbed.testbed_fixture import probe

    probe(tb)
    procs = _procs(tb)
    tb.down()
    assert not any(p.alive() for p in procs)
    wan = tb.run_dir / "pcap" / "wan.pcap"
    assert wan.exists() and wan.stat().st_size > 24  # more than the pcap header: the DHCPv6 exchange


def test_vm_slot_tap_reaches_the_isp(make_testbed) -> None:  # noqa: F811
    """A VM slot's WAN TAP (root namespace) is bridged to the ISP: a reader on it sees the ISP's RAs."""
    import fcntl
    import select
    import struct

    tb = make_testbed("cosmote-like", br=False, ces=1, vm_slots=(1,))
    slot = tb.status.slots[0]
    assert slot.kind == "vm" and slot.wan_tap
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        tunsetiff, iff_tap, iff_no_pi = 0x400454CA, 0x0002, 0x1000
        fcntl.ioctl(fd, tunsetiff, struct.pack("16sH", slot.wan_tap.encode(), iff_tap | iff_no_pi))
        deadline = time.monotonic() + 10  # RAs go out every 4 s
        seen_ra = False
        while not seen_ra and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            frame = os.read(fd, 65535)
            # Ethernet IPv6, next header ICMPv6 (58), type 134 (router advertisement)
            seen_ra = frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 134
        assert seen_ra, "no router advertisement reached the VM slot's TAP"
    finally:
        os.close(fd)
