"""Userspace packet I/O for hosts whose kernel has no ip6tnl/ipip/sit devices.

The Border Relay and the reference CE both move IPv4-in-IPv6 (RFC 2473) packets themselves:

* :mod:`.tun` opens a TUN device (IPv4 side, ``IFF_TUN | IFF_NO_PI``);
* :mod:`.ip6ip4` wraps a raw ``AF_INET6`` socket for protocol 4 (the tunnel side);
* :mod:`.packets` parses and builds just enough IPv4/TCP/UDP/ICMP with ``struct`` for a
  per-packet path that stays cheap — scapy is for tests, never for forwarding.
"""

from .ip6ip4 import Ip6Ip4Socket
from .tun import open_tun

__all__ = ["Ip6Ip4Socket", "open_tun"]
