"""The DHCPv6 wire format (RFC 8415) as mapelab speaks it: one strict codec for every user.

Why one module: the reference CE's client, the testbed's probe, the faulty responder and the
ISP's snooping of delegated prefixes all read and write DHCPv6 messages.  Written four times,
three copies walked options leniently and silently dropped a truncated one — exactly the kind
of input a MAP-E CE must be tested against.  Here every walk is strict: an option whose length
runs past its container, or trailing bytes too short for an option header, raise
:class:`Dhcp6Error` naming the offset, like :mod:`mapelab.mape`'s codec does for option 94.

Stdlib only (``struct``, ``ipaddress``): the reference CE daemon imports it inside a bare guest.
Only the wire format lives here; who sends what when (the client's state machine, the
responder's faults) stays with its owner.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

# -- message types, options, status codes (RFC 8415 §7.3, §21; RFC 3646; RFC 7598) -------------------

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE, RECONFIGURE = range(1, 11)
INFORMATION_REQUEST = 11
MSG_NAMES = {
    1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 4: "CONFIRM", 5: "RENEW", 6: "REBIND", 7: "REPLY",
    8: "RELEASE", 9: "DECLINE", 10: "RECONFIGURE", 11: "INFORMATION-REQUEST",
}
CLIENT_MESSAGES = frozenset({SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE, INFORMATION_REQUEST})

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_STATUS_CODE = 13
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
OPT_IAPREFIX = 26
OPT_S46_CONT_MAPE = 94

STATUS_SUCCESS = 0
STATUS_UNSPEC_FAIL = 1
STATUS_NO_ADDRS_AVAIL = 2
STATUS_NO_BINDING = 3
STATUS_NOT_ON_LINK = 4
STATUS_USE_MULTICAST = 5
STATUS_NO_PREFIX_AVAIL = 6
STATUS_NAMES = {
    0: "Success", 1: "UnspecFail", 2: "NoAddrsAvail", 3: "NoBinding", 4: "NotOnLink", 5: "UseMulticast",
    6: "NoPrefixAvail",
}

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_SERVERS = "ff02::1:2"
INFINITY = 0xFFFFFFFF


class Dhcp6Error(ValueError):
    """Bytes that are not a well-formed DHCPv6 message; the text names where and what was expected."""


# -- options --------------------------------------------------------------------------------------------


def option(code: int, body: bytes = b"") -> bytes:
    """One option on the wire: code(16) length(16) body."""
    if not 0 <= code <= 0xFFFF or len(body) > 0xFFFF:
        raise Dhcp6Error(f"option {code}: code or {len(body)}-byte body does not fit 16 bits")
    return struct.pack("!HH", code, len(body)) + body


def iter_options(data: bytes, where: str = "message") -> Iterator[tuple[int, bytes]]:
    """Consecutive options filling ``data`` exactly; a short header or an overlong length is an error."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise Dhcp6Error(f"{where}: {len(data) - pos} trailing byte(s) at offset {pos}, an option needs 4")
        code, length = struct.unpack_from("!HH", data, pos)
        if pos + 4 + length > len(data):
            raise Dhcp6Error(
                f"{where}: option {code} at offset {pos} says length {length}, only {len(data) - pos - 4} follow"
            )
        yield code, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def encode_oro(codes: Iterable[int]) -> bytes:
    return b"".join(struct.pack("!H", c) for c in codes)


def decode_oro(body: bytes) -> tuple[int, ...]:
    if len(body) % 2:
        raise Dhcp6Error(f"ORO of {len(body)} byte(s): option codes are 2 bytes each")
    return tuple(struct.unpack(f"!{len(body) // 2}H", body))


def duid_ll(mac: bytes, hwtype: int = 1) -> bytes:
    """DUID-LL (RFC 8415 §11.4): stable across restarts without a state file, which keeps the
    server handing the same prefix to a restarted client."""
    return struct.pack("!HH", 3, hwtype) + mac


def status_code(body: bytes | None) -> tuple[int, str]:
    """(code, message) of a STATUS_CODE option; an absent option means Success (RFC 8415 §21.13)."""
    if body is None:
        return STATUS_SUCCESS, ""
    if len(body) < 2:
        raise Dhcp6Error(f"STATUS_CODE of {len(body)} byte(s): needs at least 2")
    return struct.unpack_from("!H", body)[0], body[2:].decode("utf-8", "replace")


# -- messages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One client/server message: type, 24-bit transaction id, options in wire order."""

    msg_type: int
    txid: int
    options: tuple[tuple[int, bytes], ...] = ()

    @property
    def name(self) -> str:
        return MSG_NAMES.get(self.msg_type, str(self.msg_type))

    def encode(self) -> bytes:
        return struct.pack("!I", (self.msg_type << 24) | (self.txid & 0xFFFFFF)) + self.options_bytes()

    def options_bytes(self) -> bytes:
        return b"".join(option(c, b) for c, b in self.options)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if len(data) < 4:
            raise Dhcp6Error(f"{len(data)}-byte datagram: a DHCPv6 message has a 4-byte header")
        head = struct.unpack_from("!I", data)[0]
        name = MSG_NAMES.get(head >> 24, f"type {head >> 24}")
        return cls(head >> 24, head & 0xFFFFFF, tuple(iter_options(data[4:], name)))

    @classmethod
    def decode_until_error(cls, data: bytes) -> tuple[Message, Dhcp6Error | None]:
        """For diagnostics only (a probe showing what a server sent): the options that parse, in
        order, and the error where parsing stopped.  A client must use :meth:`decode`, which
        refuses the whole message."""
        if len(data) < 4:
            raise Dhcp6Error(f"{len(data)}-byte datagram: a DHCPv6 message has a 4-byte header")
        head = struct.unpack_from("!I", data)[0]
        got: list[tuple[int, bytes]] = []
        try:
            for opt in iter_options(data[4:], MSG_NAMES.get(head >> 24, f"type {head >> 24}")):
                got.append(opt)
        except Dhcp6Error as e:
            return cls(head >> 24, head & 0xFFFFFF, tuple(got)), e
        return cls(head >> 24, head & 0xFFFFFF, tuple(got)), None

    def get(self, code: int) -> bytes | None:
        for c, b in self.options:
            if c == code:
                return b
        return None

    def get_all(self, code: int) -> list[bytes]:
        return [b for c, b in self.options if c == code]

    def oro(self) -> tuple[int, ...]:
        body = self.get(OPT_ORO)
        return decode_oro(body) if body is not None else ()


# -- IA_PD (RFC 8415 §21.21, §21.22) -------------------------------------------------------------------


@dataclass(frozen=True)
class IaPrefix:
    prefix: IPv6Network
    preferred: int
    valid: int
    status: tuple[int, str] = (STATUS_SUCCESS, "")


@dataclass(frozen=True)
class IaPd:
    iaid: int
    t1: int
    t2: int
    prefixes: tuple[IaPrefix, ...] = ()
    status: tuple[int, str] = (STATUS_SUCCESS, "")


def encode_iaprefix(p: IaPrefix) -> bytes:
    return option(OPT_IAPREFIX, struct.pack("!IIB", p.preferred, p.valid, p.prefix.prefixlen)
                  + p.prefix.network_address.packed)


def encode_ia_pd(iaid: int, prefixes: Iterable[IaPrefix] = (), t1: int = 0, t2: int = 0) -> bytes:
    """A whole IA_PD option (header included)."""
    return option(OPT_IA_PD, struct.pack("!III", iaid, t1, t2) + b"".join(encode_iaprefix(p) for p in prefixes))


def decode_ia_pd(body: bytes) -> IaPd:
    """An IA_PD option's body; every nested option is walked strictly."""
    if len(body) < 12:
        raise Dhcp6Error(f"IA_PD of {len(body)} byte(s): needs at least 12 (IAID, T1, T2)")
    iaid, t1, t2 = struct.unpack_from("!III", body)
    prefixes = []
    status = (STATUS_SUCCESS, "")
    for code, sub in iter_options(body[12:], "IA_PD"):
        if code == OPT_STATUS_CODE:
            status = status_code(sub)
        elif code == OPT_IAPREFIX:
            if len(sub) < 25:
                raise Dhcp6Error(f"IAPREFIX of {len(sub)} byte(s): needs at least 25")
            preferred, valid, plen = struct.unpack_from("!IIB", sub)
            if plen > 128:
                raise Dhcp6Error(f"IAPREFIX prefix length {plen} > 128")
            pstatus = (STATUS_SUCCESS, "")
            for c2, b2 in iter_options(sub[25:], "IAPREFIX"):
                if c2 == OPT_STATUS_CODE:
                    pstatus = status_code(b2)
            try:
                net = IPv6Network((IPv6Address(sub[9:25]), plen))
            except ValueError as e:
                raise Dhcp6Error(f"IAPREFIX {IPv6Address(sub[9:25])}/{plen}: {e}") from None
            prefixes.append(IaPrefix(net, preferred, valid, pstatus))
    return IaPd(iaid, t1, t2, tuple(prefixes), status)


def client_message(
    msg_type: int,
    txid: int,
    duid: bytes,
    iaid: int,
    *,
    elapsed_cs: int = 0,
    server_duid: bytes | None = None,
    prefixes: tuple[IaPrefix, ...] = (),
    oro: tuple[int, ...] = (),
) -> Message:
    """SOLICIT, REQUEST, RENEW, REBIND or RELEASE with one IA_PD, as RFC 8415 §18.2 lists their options."""
    opts: list[tuple[int, bytes]] = [(OPT_CLIENTID, duid)]
    if server_duid is not None:
        opts.append((OPT_SERVERID, server_duid))
    opts.append((OPT_ELAPSED_TIME, struct.pack("!H", min(0xFFFF, max(0, elapsed_cs)))))
    opts.append((OPT_IA_PD, encode_ia_pd(iaid, prefixes)[4:]))
    if msg_type != RELEASE and oro:
        opts.append((OPT_ORO, encode_oro(oro)))
    return Message(msg_type, txid, tuple(opts))


# -- a server's message seen on a link (Ethernet frames) -----------------------------------------------

ETH_P_IPV6 = 0x86DD
_NH_UDP = 17


def server_message_in_frame(frame: bytes) -> tuple[IPv6Address, Message] | None:
    """(IPv6 destination, message) when ``frame`` is an Ethernet frame carrying a DHCPv6 server
    message (UDP 547 → 546, no extension headers — what servers send); None for any other frame.

    A frame that is a server message but does not decode raises :class:`Dhcp6Error`, so a
    snooper can count it instead of silently skipping it.
    """
    if len(frame) < 14 + 40 + 8 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    ip6 = frame[14:]
    if ip6[6] != _NH_UDP:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", ip6, 40)
    if sport != SERVER_PORT or dport != CLIENT_PORT:
        return None
    payload_len = struct.unpack_from("!H", ip6, 4)[0]
    if ulen < 8 or ulen > payload_len or 40 + ulen > len(ip6):
        raise Dhcp6Error(f"UDP length {ulen} does not fit the {len(ip6) - 40}-byte IPv6 payload")
    return IPv6Address(ip6[24:40]), Message.decode(ip6[48 : 40 + ulen])
