"""What a running testbed looks like from outside: the contract between the testbed and CEs.

``testbed.status --json`` prints a :class:`TestbedStatus`; CE backends (namespace CE, Linux VM,
OpenBSD VM) attach to a :class:`CeSlot` and need nothing else from the testbed.  Written to
``<run dir>/status.json`` when the testbed is up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CeSlot:
    """Where one CE plugs in.

    A namespace CE runs in ``ce_netns`` and finds its WAN (``wan_if``) and LAN (``lan_if``)
    interfaces there, already linked to the ISP bridge and to its LAN host.  A VM CE gets two
    TAPs instead (``wan_tap`` on the ISP-side bridge, ``lan_tap`` on its LAN bridge) and
    ``ce_netns`` is None.  The CE itself configures its LAN address ``lan_gateway``: it is the router.
    """

    index: int
    kind: str  # "netns" or "vm"
    ce_netns: str | None
    wan_if: str
    lan_if: str
    wan_tap: str | None
    lan_tap: str | None
    lan_netns: str  # the LAN host behind this CE
    lan_prefix: IPv4Network
    lan_host: IPv4Address
    lan_gateway: IPv4Address
    wan_mtu: int


@dataclass(frozen=True)
class TestbedStatus:
    run_id: str
    run_dir: Path
    prefix: str  # every namespace, bridge, veth and TAP of this run starts with it
    scenario: str
    isp_netns: str
    inet_netns: str
    br_address: IPv6Address
    inet_addresses: tuple[IPv4Address, ...]
    slots: tuple[CeSlot, ...]
    #: a host on the access network (the CEs' WAN link) that injects what no honest CE sends
    access_netns: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> TestbedStatus:
        d = json.loads(text)
        slots = tuple(
            CeSlot(
                **{
                    **s,
                    "lan_prefix": IPv4Network(s["lan_prefix"]),
                    "lan_host": IPv4Address(s["lan_host"]),
                    "lan_gateway": IPv4Address(s["lan_gateway"]),
                }
            )
            for s in d.pop("slots")
        )
        return cls(
            **{
                **d,
                "run_dir": Path(d["run_dir"]),
                "br_address": IPv6Address(d["br_address"]),
                "inet_addresses": tuple(IPv4Address(a) for a in d["inet_addresses"]),
                "slots": slots,
            }
        )
