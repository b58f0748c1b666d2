"""Just enough IPv4, TCP, UDP and ICMP for a MAP-E forwarding path, with ``struct`` and no objects per field.

What a BR or CE needs to know about a packet is small: addresses, the protocol, the *MAP port*
(the transport port, the ICMP query identifier, or — for an ICMP error — the port of the packet
it quotes), fragmentation fields and DF.  :func:`parse` extracts that once per packet and
rejects what is not a well-formed IPv4 packet with :class:`Malformed`, so the forwarding loop
can count and drop instead of dying.  The builders make the packets a tunnel entry point must
originate itself: IPv4 fragments (RFC 791, the RFC 2473 §7.2 shape of fragmenting before
encapsulating) and ICMPv4 errors such as "fragmentation needed" (RFC 1191) with a next-hop MTU.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
#: Protocols whose first four transport bytes are source and destination port.
PORT_PROTOCOLS = frozenset({PROTO_TCP, PROTO_UDP, 33, 132, 136})  # + DCCP, SCTP, UDP-Lite
#: ICMP query types that carry an identifier; MAP-E treats the identifier as a port.
ICMP_QUERY_TYPES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})
#: ICMP error types that quote the offending packet's header.
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = 4  # code under type 3
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8

_HDR = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_ICMP = struct.Struct("!BBHHH")
_LITTLE = sys.byteorder == "little"
IP_DF = 0x4000
IP_MF = 0x2000
_OFFMASK = 0x1FFF


class Malformed(ValueError):
    """Not a packet a router may forward; the message is a short reason for counters and logs."""


@dataclass(slots=True)
class Ipv4:
    """One parsed IPv4 packet.

    ``sport``/``dport`` are MAP ports (RFC 7597 §8): for TCP/UDP/SCTP/DCCP the transport ports,
    for ICMP queries the identifier (both fields), for ICMP errors the ports of the *quoted*
    packet swapped into the sender's point of view — ``sport`` is the quoted destination port
    and ``dport`` the quoted source port, because the quoted packet travelled the other way.
    They are None on non-first fragments and for protocols without ports.
    """

    hlen: int
    total: int
    ident: int
    df: bool
    mf: bool
    offset: int  # fragment offset in bytes
    ttl: int
    proto: int
    src: bytes
    dst: bytes
    sport: int | None
    dport: int | None
    icmp_type: int | None = None
    icmp_code: int | None = None
    embedded: tuple[int, bytes, bytes, int | None, int | None] | None = None  # proto, src, dst, sport, dport

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.offset > 0

    @property
    def is_icmp_error(self) -> bool:
        return self.embedded is not None


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) as an integer to pack with ``!H``.

    Summing native-order 16-bit words in C (``array``) and swapping once at the end is the
    cheap way to do this in Python: the one's-complement sum is byte-order independent.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = sum(array("H", bytes(data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    if _LITTLE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s


def _quoted(data: bytes, start: int) -> tuple[int, bytes, bytes, int | None, int | None]:
    """The header an ICMP error quotes: (proto, src, dst, sport, dport); ports may be None."""
    if len(data) - start < 20:
        raise Malformed("icmp-error-quote-short")
    vihl, _tos, _tot, _id, frag, _ttl, proto, _ck, src, dst = _HDR.unpack_from(data, start)
    hlen = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or hlen < 20 or len(data) - start < hlen:
        raise Malformed("icmp-error-quote-bad")
    sport = dport = None
    room = len(data) - start - hlen
    if frag & _OFFMASK == 0:
        if proto in PORT_PROTOCOLS and room >= 4:
            sport, dport = _PORTS.unpack_from(data, start + hlen)
        elif proto == PROTO_ICMP and room >= 8:
            t, _c, _k, ident, _s = _ICMP.unpack_from(data, start + hlen)
            if t in ICMP_QUERY_TYPES:
                sport = dport = ident
    return proto, src, dst, sport, dport


def parse(data: bytes, verify_checksum: bool = True) -> Ipv4:
    """Parse an IPv4 packet; raise :class:`Malformed` for anything a router must not forward.

    Trailing bytes beyond the IPv4 total length are tolerated (link padding); the caller may
    trim with ``data[:pkt.total]``.
    """
    n = len(data)
    if n < 20:
        raise Malformed("short")
    vihl, _tos, total, ident, frag, ttl, proto, _ck, src, dst = _HDR.unpack_from(data)
    if vihl >> 4 != 4:
        raise Malformed("not-ipv4")
    hlen = (vihl & 0xF) * 4
    if hlen < 20 or total < hlen or total > n:
        raise Malformed("bad-length")
    if verify_checksum and checksum(data[:hlen]) != 0:
        raise Malformed("bad-checksum")
    offset = (frag & _OFFMASK) * 8
    mf = bool(frag & IP_MF)
    plen = total - hlen
    if offset + plen > 65535 or (mf and (plen == 0 or plen & 7)):
        raise Malformed("bad-fragment")
    if frag & 0x8000:
        raise Malformed("reserved-flag")
    pkt = Ipv4(hlen, total, ident, bool(frag & IP_DF), mf, offset, ttl, proto, src, dst, None, None)
    if offset:
        return pkt
    if proto in PORT_PROTOCOLS:
        if plen < 4:
            raise Malformed("short-transport")
        pkt.sport, pkt.dport = _PORTS.unpack_from(data, hlen)
    elif proto == PROTO_ICMP:
        if plen < 8:
            raise Malformed("short-icmp")
        t, c, _k, ident_, _seq = _ICMP.unpack_from(data, hlen)
        pkt.icmp_type, pkt.icmp_code = t, c
        if t in ICMP_QUERY_TYPES:
            pkt.sport = pkt.dport = ident_
        elif t in ICMP_ERROR_TYPES:
            emb = _quoted(data[:total], hlen + 8)
            pkt.embedded = emb
            pkt.sport, pkt.dport = emb[4], emb[3]
    return pkt


def build_ipv4(
    src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int = 0, ttl: int = 64,
    df: bool = False, tos: int = 0, options: bytes = b"", frag: int = 0,
) -> bytes:
    """An IPv4 packet with a correct header checksum (``frag``: raw flags/offset field, else DF)."""
    hlen = 20 + len(options)
    flags = frag if frag else (IP_DF if df else 0)
    hdr = bytearray(_HDR.pack(0x40 | hlen // 4, tos, hlen + len(payload), ident, flags, ttl, proto, 0, src, dst))
    hdr += options
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr) + payload


def _copied_options(options: bytes) -> bytes:
    """Options with the copied flag (RFC 791): the only ones repeated in non-first fragments."""
    out = bytearray()
    i = 0
    while i < len(options):
        t = options[i]
        if t == 0:
            break
        if t == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        ln = options[i + 1]
        if t & 0x80:
            out += options[i : i + ln]
        i += ln
    while len(out) % 4:
        out.append(0)
    return bytes(out)


def fragment(data: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet (itself possibly a fragment) into fragments of at most ``mtu`` bytes.

    Offsets continue from the original and the last piece keeps the original MF flag, so a
    fragment of a fragment reassembles like any other.  DF packets must not come here: the
    caller answers them with :func:`icmp_frag_needed` instead.
    """
    vihl, tos, total, ident, frag, ttl, proto, _ck, src, dst = _HDR.unpack_from(data)
    hlen = (vihl & 0xF) * 4
    if total <= mtu:
        return [data[:total]]
    opts_first = data[20:hlen]
    opts_rest = _copied_options(opts_first)
    base = (frag & _OFFMASK) * 8
    orig_mf = frag & IP_MF
    payload = memoryview(data)[hlen:total]
    out = []
    pos = 0
    first = True
    while pos < len(payload):
        opts = opts_first if first else opts_rest
        room = (mtu - 20 - len(opts)) & ~7
        if room <= 0:
            raise Malformed("mtu-too-small")
        chunk = payload[pos : pos + room]
        last = pos + len(chunk) >= len(payload)
        field = ((base + pos) // 8) | (orig_mf if last else IP_MF)
        out.append(build_ipv4(src, dst, proto, bytes(chunk), ident=ident, ttl=ttl, tos=tos, options=opts, frag=field))
        pos += len(chunk)
        first = False
    return out


def icmp_error(original: bytes, icmp_type: int, code: int, src: bytes, rest: int = 0, ttl: int = 64) -> bytes:
    """An ICMPv4 error about ``original`` sent from ``src`` to its source (RFC 792, RFC 1812 §4.3.2.3).

    Quotes as much of the original as fits in 576 bytes, as RFC 1812 asks of routers.
    ``rest`` is the 32-bit field after the checksum (for "fragmentation needed": the MTU).
    """
    hlen = (original[0] & 0xF) * 4
    total = struct.unpack_from("!H", original, 2)[0]
    quote = original[: max(hlen + 8, min(total, 576 - 28))]
    body = bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest & 0xFFFFFFFF)) + quote
    struct.pack_into("!H", body, 2, checksum(body))
    return build_ipv4(src, original[12:16], PROTO_ICMP, bytes(body), ttl=ttl)


def icmp_frag_needed(original: bytes, mtu: int, src: bytes) -> bytes:
    """ICMPv4 type 3 code 4 with the next-hop MTU (RFC 1191): what a tunnel entry point sends
    for a DF packet that does not fit the tunnel (RFC 2473 §7.2)."""
    return icmp_error(original, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, src, rest=mtu & 0xFFFF)


def icmpv6_ptb_mtu(data: bytes) -> tuple[int, bytes, bytes] | None:
    """An ICMPv6 Packet Too Big as read from a raw ICMPv6 socket (no IPv6 header):
    (MTU, quoted IPv6 source, quoted IPv6 destination), or None if it is not a usable PTB."""
    if len(data) < 8 + 40 or data[0] != 2:
        return None
    mtu = struct.unpack_from("!I", data, 4)[0]
    if data[8] >> 4 != 6:
        return None
    return mtu, data[8 + 8 : 8 + 24], data[8 + 24 : 8 + 40]
