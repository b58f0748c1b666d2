"""The tunnel side of MAP-E without ip6tnl: a raw IPv6 socket for next header 4 (IPv4-in-IPv6).

Linux hands a raw ``AF_INET6`` socket the IPv6 *payload* (the inner IPv4 packet), the outer
source in the address and — with ``IPV6_RECVPKTINFO`` — the outer destination in a control
message, which the BR needs to check the packet was sent to a BR address.  On send,
``IPV6_PKTINFO`` picks the outer source per packet (the BR address, or a CE's MAP address),
so one socket serves every address of the node.  The kernel writes a plain 40-byte IPv6 header
with next header 4: no Tunnel Encapsulation Limit option is ever emitted (RFC 7597 §5 tells
MAP nodes not to use it).  IPv6 fragments are reassembled by the kernel before delivery.
"""

from __future__ import annotations

import contextlib
import socket
from ipaddress import IPv6Address

IPPROTO_IPIP = 4
_PKTINFO_SPACE = socket.CMSG_SPACE(20)  # struct in6_pktinfo: 16-byte address + ifindex
_BUFSIZE = 65535 + 64


class Ip6Ip4Socket:
    """IPv4 packets in and out of IPv6 (protocol 4) through one raw socket.

    ``recv``/``send`` speak :class:`IPv6Address` for callers that want clarity; the
    ``recv_raw``/``send_raw`` pair speaks 16-byte packed addresses for the BR's per-packet
    path, where building address objects would cost more than the forwarding itself.
    """

    def __init__(self, *, blocking: bool = True, rcvbuf: int = 4 << 20, sndbuf: int = 4 << 20) -> None:
        self._sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPIP)
        try:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            # Bursts (a fragment train, a benchmark) must queue rather than drop: root may
            # exceed net.core.rmem_max with the *FORCE variants; otherwise take what we get.
            for force, opt, size in ((33, socket.SO_RCVBUF, rcvbuf), (32, socket.SO_SNDBUF, sndbuf)):
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, force, size)
                except OSError:
                    with contextlib.suppress(OSError):
                        self._sock.setsockopt(socket.SOL_SOCKET, opt, size)
            self._sock.setblocking(blocking)
        except BaseException:
            self._sock.close()
            raise
        self._pktinfo: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self._dst: dict[bytes, tuple[str, int]] = {}

    # -- the per-packet path -----------------------------------------------------------------

    def recv_raw(self) -> tuple[bytes, bytes, bytes]:
        """One packet: (inner IPv4 bytes, outer source, outer destination) with packed addresses.

        The destination is ``b""`` if the kernel gave no packet info (it always does on Linux
        once ``IPV6_RECVPKTINFO`` is set).  Raises ``BlockingIOError`` on a non-blocking
        socket with nothing queued.
        """
        data, anc, _flags, addr = self._sock.recvmsg(_BUFSIZE, _PKTINFO_SPACE)
        dst = b""
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst = value[:16]
        return data, socket.inet_pton(socket.AF_INET6, addr[0].partition("%")[0]), dst

    def send_raw(self, ipv4_packet: bytes, src: bytes, dst: bytes) -> None:
        """Encapsulate ``ipv4_packet`` from ``src`` to ``dst`` (16-byte packed addresses)."""
        anc = self._pktinfo.get(src)
        if anc is None:
            anc = self._pktinfo[src] = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, src + b"\0\0\0\0")]
        to = self._dst.get(dst)
        if to is None:
            if len(self._dst) > 65536:
                self._dst.clear()
            to = self._dst[dst] = (socket.inet_ntop(socket.AF_INET6, dst), 0)
        self._sock.sendmsg((ipv4_packet,), anc, 0, to)

    # -- the friendly API ----------------------------------------------------------------------

    def recv(self) -> tuple[bytes, IPv6Address, IPv6Address]:
        """One packet: (inner IPv4 packet, outer source, outer destination)."""
        data, src, dst = self.recv_raw()
        return data, IPv6Address(src), IPv6Address(dst) if dst else IPv6Address(0)

    def send(self, ipv4_packet: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """Send ``ipv4_packet`` inside IPv6 from ``src`` (must be a local address) to ``dst``."""
        self.send_raw(ipv4_packet, src.packed, dst.packed)

    def settimeout(self, seconds: float | None) -> None:
        """For tests and simple tools that wait a bounded time for one packet."""
        self._sock.settimeout(seconds)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Ip6Ip4Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
