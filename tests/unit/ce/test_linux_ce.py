"""The reference CE's reconcile logic with the system calls recorded instead of run: what it applies,
in which order, and what it withdraws (ip6tnl mode here — the kernel of this host has none)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Network
from pathlib import Path

import pytest

from mapelab import scenario as scenarios
from mapelab.ce.daemon import service as linux
from mapelab.ce.daemon import system
from mapelab.ce.daemon.dhcp6client import Lease, LeaseEvent
from mapelab.mape.codec import Container

SC = scenarios.load("cosmote-like")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ip(self, *args: str, check: bool = True) -> str:
        self.calls.append("ip " + " ".join(args))
        return ""

    def nft(self, script: str) -> None:
        self.calls.append("nft " + ("delete" if "{" not in script else "replace"))

    def flush(self) -> None:
        self.calls.append("conntrack flush")


@pytest.fixture
def ce(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[linux.ReferenceCe, Recorder]:
    rec = Recorder()
    monkeypatch.setattr(system, "ip", rec.ip)
    monkeypatch.setattr(system, "nft", rec.nft)
    monkeypatch.setattr(system, "flush_conntrack", rec.flush)
    monkeypatch.setattr(system, "interface_mtu", lambda _i: 1492)
    monkeypatch.setattr(system, "interface_exists", lambda i: i == "mape0" and any("add mape0" in c for c in rec.calls))
    monkeypatch.setattr(system, "ip_json", lambda *a: [])
    monkeypatch.setattr(system, "sysctl", lambda *a: None)
    opts = linux.Options("wan0", "lan0", IPv4Interface("192.168.1.1/24"), tmp_path, tunnel="ip6tnl")
    c = linux.ReferenceCe(opts)
    c.tunnel_mode = "ip6tnl"
    return c, rec


def lease(prefix: IPv6Network | None = None, mape: bool = True) -> Lease:
    containers = (Container(94, SC.container().options),) if mape else ()
    return Lease(b"srv", "fe80::1", prefix or SC.first_prefix(), 40, 60, 20, 32, 0.0, containers)


def test_apply_order_guard_before_route_and_ip6tnl_without_encaplimit(ce) -> None:
    c, rec = ce
    c.on_event(LeaseEvent("new", lease()))
    p = SC.derive()
    assert c.status == "provisioned" and c.applied is not None and c.applied.params == p
    assert rec.calls[0] == "nft replace", "NAT and guard exist before anything can use the tunnel"
    assert rec.calls[1] == f"ip -6 addr replace {p.map_address}/128 dev wan0 nodad"
    add = rec.calls[2]
    assert add.startswith("ip link add mape0 type ip6tnl mode ipip6") and "encaplimit none" in add
    assert f"local {p.map_address} remote {p.br}" in add
    assert rec.calls[3] == "ip link set mape0 mtu 1452 up"
    assert rec.calls[4:] == [f"ip addr replace {p.ipv4}/32 dev mape0", "ip route replace default dev mape0",
                             "conntrack flush"]


def test_unchanged_does_nothing_changed_withdraws_first(ce) -> None:
    c, rec = ce
    c.on_event(LeaseEvent("new", lease()))
    n = len(rec.calls)
    c.on_event(LeaseEvent("unchanged", lease()))
    assert len(rec.calls) == n and c.generation == 1
    new_prefix = IPv6Network("2001:db8:6200:4400::/56")
    c.on_event(LeaseEvent("changed", lease(new_prefix)))
    tail = rec.calls[n:]
    old = SC.derive()
    assert tail[:5] == ["ip route del default dev mape0", "ip link del mape0", "nft delete",
                        f"ip -6 addr del {old.map_address}/128 dev wan0", "conntrack flush"]
    assert tail[5] == "nft replace" and c.generation == 2
    assert c.applied is not None and c.applied.params == SC.derive(new_prefix)


def test_option_94_gone_and_expiry_withdraw(ce) -> None:
    c, rec = ce
    c.on_event(LeaseEvent("new", lease()))
    c.on_event(LeaseEvent("withdrawn", lease(mape=False)))
    assert c.applied is None and c.status == "withdrawn" and rec.calls[-1] == "conntrack flush"
    c.on_event(LeaseEvent("new", lease()))
    assert c.applied is not None
    c.on_event(LeaseEvent("expired", None))
    assert c.applied is None and c.status == "withdrawn"
    assert [e["kind"] for e in c.events] == ["new", "withdrawn", "new", "expired"]


def test_underivable_container_is_reported_not_applied(ce) -> None:
    c, rec = ce
    c.on_event(LeaseEvent("new", lease(IPv6Network("2001:db8:7000::/56"))))  # outside the rule
    assert c.applied is None and rec.calls == []
    assert "no rule matches" in c.errors[-1]


def test_ignore_renumbering_fault_keeps_first_params(ce) -> None:
    c, _ = ce
    c.opts.faults = ("ignore-renumbering",)
    c.on_event(LeaseEvent("new", lease()))
    c.on_event(LeaseEvent("changed", lease(IPv6Network("2001:db8:6200:4400::/56"))))
    assert c.applied is not None and c.applied.params == SC.derive() and c.generation == 1


def test_state_snapshot_is_json(ce) -> None:
    import json

    c, _ = ce
    c.on_event(LeaseEvent("new", lease()))
    c.write_state(force=True)
    st = json.loads((c.state_dir / "state.json").read_text())
    assert st["status"] == "provisioned" and st["params"]["psid"] == 2 and st["tunnel"]["mtu"] == 1452
    assert st["tunnel"]["mode"] == "ip6tnl" and st["lease"]["prefix"] == str(SC.first_prefix())
