"""The ISP's IPv6 router duties that Kea does not do: router advertisements and PD routes.

* Router advertisements (RFC 4861) on the WAN bridge: periodic and in answer to router
  solicitations, with M and O set (use DHCPv6), the WAN MTU, and the WAN /64 for SLAAC, so a
  CE's WAN gets its default route the way it does at a real ISP.  Debian has no radvd on this
  machine's package set, and 40 lines of raw ICMPv6 are simpler than configuring one.
* Routes for delegated prefixes: a real ISP's BNG installs a route for every delegated prefix
  toward the CE that holds it.  Kea 2.2 does not, so the testbed watches the DHCPv6 replies
  leaving the WAN bridge (the client's link-local is the destination, IA_PD/IAPREFIX carry the
  prefix) and installs ``PREFIX via LINK-LOCAL`` — without it the BR could not reach a MAP address.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from mapelab.netio import dhcp6 as w

ALL_NODES = "ff02::1"
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003


def build_ra(mac: bytes, mtu: int, prefix: IPv6Network, lifetime: int = 1800) -> bytes:
    """An ICMPv6 router advertisement (the kernel fills in the checksum on a raw ICMPv6 socket)."""
    flags = 0x80 | 0x40  # M: addresses/prefixes via DHCPv6; O: other configuration via DHCPv6
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, flags, lifetime, 0, 0)
    ra += struct.pack("!BB6s", 1, 1, mac)  # source link-layer address
    ra += struct.pack("!BBHI", 5, 1, 0, mtu)  # MTU
    ra += struct.pack(
        "!BBBBIII16s", 3, 4, prefix.prefixlen, 0xC0, 86400, 14400, 0, prefix.network_address.packed
    )  # prefix information: on-link, autonomous
    return ra


def ra_socket(ifindex: int) -> socket.socket:
    """A raw ICMPv6 socket that sends on ``ifindex`` with hop limit 255 and receives solicitations."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    # ICMP6_FILTER: pass only router solicitations (type 133).
    blocked = [0xFFFFFFFF] * 8
    blocked[133 >> 5] &= ~(1 << (133 & 31))
    s.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("8I", *blocked))
    mreq = socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", ifindex)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    s.setblocking(False)
    return s


def send_ra(s: socket.socket, ra: bytes, ifindex: int, dst: str = ALL_NODES) -> None:
    s.sendto(ra, (dst, 0, 0, ifindex))


@dataclass(frozen=True)
class Delegation:
    """One IAPREFIX seen in a DHCPv6 reply from the server to ``client``."""

    client: IPv6Address
    prefix: IPv6Network
    valid: int


# Classic BPF: IPv6, next header UDP, UDP source port 547 (a server's message); else drop.
_BPF = [
    (0x28, 0, 0, 12), (0x15, 0, 5, ETH_P_IPV6),  # ldh [12]; jeq IPv6
    (0x30, 0, 0, 20), (0x15, 0, 3, 17),  # ldb [20] (next header); jeq UDP
    (0x28, 0, 0, 54), (0x15, 0, 1, 547),  # ldh [54] (UDP source port); jeq 547
    (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0),  # accept / drop
]
SO_ATTACH_FILTER = 26


def pd_socket(ifindex: int) -> socket.socket:
    """An AF_PACKET socket on the WAN bridge that sees the server's outgoing DHCPv6 messages.

    Outgoing frames reach only ETH_P_ALL taps, so the socket is ETH_P_ALL with a BPF filter
    that lets through nothing but DHCPv6 server messages (the bridge also carries bulk traffic).
    """
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    prog = b"".join(struct.pack("HBBI", *ins) for ins in _BPF)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(_BPF), ctypes.addressof(buf))
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    s.bind((socket.if_indextoname(ifindex), ETH_P_ALL))
    s.setblocking(False)
    return s


def parse_reply(frame: bytes) -> list[Delegation]:
    """Delegations in a DHCPv6 REPLY from the server; [] for any other frame.

    A REPLY that does not decode raises :class:`mapelab.netio.dhcp6.Dhcp6Error` (the caller
    notes it): a route must never come from a half-read message.
    """
    seen = w.server_message_in_frame(frame)
    if seen is None or seen[1].msg_type != w.REPLY:
        return []
    client, msg = seen
    return [Delegation(client, p.prefix, p.valid)
            for body in msg.get_all(w.OPT_IA_PD) for p in w.decode_ia_pd(body).prefixes]
