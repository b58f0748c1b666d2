"""The CE driver interface: registry, parameters comparable with the model, LAN host commands."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from mapelab import scenario as scenarios
from mapelab.ce import CeError, CeParams, LanHost, available, backend, create
from mapelab.ce.backend_linux import LinuxNetnsCe
from mapelab.ce.daemon.service import params_to_json
from mapelab.ce.reference import nat_summary
from mapelab.testbed.status import CeSlot


def slot(kind: str = "netns", ns: str | None = "mlce-nonexistent-ce") -> CeSlot:
    return CeSlot(0, kind, ns, "wan0", "lan0", None, None, "lanns", IPv4Network("192.168.1.0/24"),
                  IPv4Address("192.168.1.2"), IPv4Address("192.168.1.1"), 1500)


def test_registry_knows_linux_and_names_the_missing() -> None:
    assert backend("linux") is LinuxNetnsCe
    assert "linux" in available()
    with pytest.raises(CeError, match="known: linux"):
        backend("windows")
    from mapelab.ce.backend_openbsd import OpenBsdCe

    assert backend("openbsd") is OpenBsdCe and set(available()) == {"linux", "linux-vm", "openbsd"}


def test_linux_backend_refuses_vm_slots_and_missing_namespaces() -> None:
    with pytest.raises(CeError, match="use backend linux-vm"):
        create("linux", slot("vm", None))
    with pytest.raises(CeError, match="does not exist"):
        create("linux", slot())


@pytest.mark.parametrize("name", ["cosmote-like", "rfc7597-example1", "k12-small-set", "k0-full-address"])
def test_params_round_trip_through_state_json(name: str) -> None:
    p = scenarios.load(name).derive()
    got = CeParams.from_json(params_to_json(p))
    assert got == CeParams.from_mape(p)
    assert got.differences(p) == []
    assert got.port_set == p.port_set


def test_differences_name_the_field() -> None:
    a = scenarios.load("cosmote-like").derive()
    b = CeParams.from_mape(a)
    other = CeParams(b.ipv4, b.ipv4_len, b.psid + 1, b.psid_len, b.psid_offset, b.map_address, b.br,
                     b.delegated_prefix)
    assert other.differences(a) == ["psid: CE 3 != model 2"]


def test_lan_host_argv_runs_in_its_namespace() -> None:
    h = LanHost("ns1", IPv4Address("192.168.1.2"), IPv4Address("192.168.1.1"), IPv4Network("192.168.1.0/24"))
    assert h.argv(["true"]) == ["ip", "netns", "exec", "ns1", "true"]


def test_nat_summary_reads_counters_by_comment() -> None:
    nft = {"nftables": [
        {"map": {"name": "psmap", "elem": [[0, 1]]}},
        {"rule": {"chain": "guard", "handle": 7, "comment": "egress-wrong-address",
                  "expr": [{"counter": {"packets": 3, "bytes": 9}}, {"drop": None}]}},
    ]}
    s = nat_summary(nft)
    assert s["psmap"] == [[0, 1]] and s["counters"] == {"egress-wrong-address": 3} and s["rules"] == 1


def test_capabilities_say_why_one_is_missing_and_require_reports_unsupported(tmp_path) -> None:
    from mapelab.ce.driver import Capability, Unsupported

    ce = LinuxNetnsCe(tmp_path, capabilities_off=["renew"])
    caps = ce.capabilities()
    assert Capability.RESTART in caps and Capability.RENEW not in caps
    assert "switched off" in caps.reason(Capability.RENEW)
    assert caps.as_dict()["flap-wan"] == "the reference CE does not implement it"
    with pytest.raises(Unsupported, match="renew needs renew, which the linux CE lacks: switched off"):
        ce.renew()
    with pytest.raises(CeError, match="known capabilities are"):
        LinuxNetnsCe(tmp_path, capabilities_off=["teleport"])


def test_state_from_daemon_reads_ranges_from_the_psmap() -> None:
    from mapelab.ce.reference import state_from_daemon

    p = scenarios.load("cosmote-like").derive()
    nft = {"nftables": [{"map": {"name": "psmap", "elem": [
        [i, {"concat": [str(p.ipv4), {"range": list(r)}]}] for i, r in enumerate(p.port_set.ranges())]}}]}
    st = state_from_daemon("linux", True, {"status": "provisioned", "params": params_to_json(p), "generation": 2,
                                           "tunnel": {"name": "mape0", "mtu": 1452, "mss": 1412}},
                           {"nft": nft}, {"os": "Linux"})
    assert st.params == CeParams.from_mape(p) and st.generation == 2 and st.tunnel.mss == 1412
    assert st.nat.port_ranges == tuple(p.port_set.ranges())
    assert st.to_json()["tunnel"]["mtu"] == 1452
    empty = state_from_daemon("linux", False, {}, {}, {})
    assert empty.status == "stopped" and empty.params is None and empty.generation is None
