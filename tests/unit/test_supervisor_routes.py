"""The ISP's route to a delegated prefix is claimed (log, status) only when `ip` installed it."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from types import SimpleNamespace

from mapelab.testbed import ra
from mapelab.testbed.supervisor import Supervisor


def test_a_failed_route_install_is_logged_as_failed_and_not_recorded(tmp_path: Path) -> None:
    # A supervisor whose ISP namespace does not exist: `ip -n … route replace` really fails.
    sup = Supervisor.__new__(Supervisor)
    sup.routes = {}
    sup.lay = SimpleNamespace(isp="mlzz-no-such-ns", wan_bridge="mlzz-wbr")
    sup.events = tmp_path / "events.log"
    written: list[int] = []
    sup.write_status = lambda: written.append(1)  # type: ignore[method-assign]
    prefix, client = IPv6Network("2001:db8:6200:4200::/56"), IPv6Address("fe80::1")
    sup.delegation(ra.Delegation(client, prefix, 60))
    log = sup.events.read_text()
    assert f"route {prefix} via {client} NOT installed" in log and " installed\n" not in log, log
    assert sup.routes == {} and written == []  # status does not claim it; the next reply tries again
    sup.delegation(ra.Delegation(client, prefix, 60))
    assert sup.events.read_text().count("NOT installed") == 2
