"""mapelab's own DHCPv6 responder, for wire errors Kea refuses to send.

Kea validates option data at load time, so a truncated option, a length field that lies or a
rule whose prefix6-len is longer than the bytes that follow can never come out of it.  A CE
must survive those (RFC 7598 §5: discard the container), so negative tests replace Kea by this
responder (:meth:`mapelab.testbed.api.Testbed.use_responder`) for the duration of a test.

It answers SOLICIT with ADVERTISE and REQUEST/RENEW/REBIND with REPLY: client and server ids,
an IA_PD with the next prefix of the pool (one per client DUID), and then the given raw bytes
appended verbatim at the end of the message — so even a header whose length runs past the end
of the packet can be sent.  The bytes go out when the client's ORO lists 94 (``--always``: every
time).  Builders for the usual faults are below (:func:`truncated`, :func:`wrong_length`,
:func:`rule_prefix_longer_than_bytes`).

Run: ``ip netns exec ISP python -m mapelab.testbed.responder --iface WBR --pd-pool P --delegated-len N
--option-hex HEX``.  Plain sockets: no scapy start-up delay.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from mapelab.mape import encode_container
from mapelab.mape.codec import encode_option
from mapelab.netio import dhcp6 as w

SERVER_DUID = struct.pack("!HI", 2, 2495) + b"mapelab-responder"


# -- fault builders (bytes of a whole option 94, header included) ----------------------------


def truncated(option: bytes, cut: int = 5) -> bytes:
    """The option with its last ``cut`` bytes missing but its header unchanged (must end the message)."""
    return option[: len(option) - cut]


def wrong_length(option: bytes, delta: int) -> bytes:
    """The option with its length field off by ``delta`` (the body is unchanged)."""
    code, length = struct.unpack_from("!HH", option, 0)
    return struct.pack("!HH", code, max(0, length + delta) & 0xFFFF) + option[4:]


DOC_BR = IPv6Address("2001:db8:ffff::1").packed


def rule_prefix_longer_than_bytes(prefix6_len: int = 64, present: int = 5, br: bytes = DOC_BR) -> bytes:
    """A container whose rule says prefix6-len ``prefix6_len`` but carries only ``present`` prefix bytes."""
    rule = bytes([0, 16, 24]) + bytes([192, 0, 2, 0]) + bytes([prefix6_len]) + bytes.fromhex("20010db800")[:present]
    return encode_option(94, encode_option(89, rule) + encode_option(90, br))


def valid_container_hex(container) -> str:
    return encode_container(container).hex()


# -- the responder ---------------------------------------------------------------------------


def answer(request: bytes, lease_for: Callable[[bytes], IPv6Network | None], timers: tuple[int, int, int, int],
           raw: bytes | None, always: bool) -> bytes | None:
    """The ADVERTISE or REPLY to one client message, with ``raw`` appended verbatim; None to stay silent.

    A client message that does not decode is not answered (and not guessed at): the error goes
    to stderr, the responder's log.
    """
    try:
        msg = w.Message.decode(request)
        asked = set(msg.oro())
        ia = w.decode_ia_pd(msg.get(w.OPT_IA_PD)) if msg.get(w.OPT_IA_PD) is not None else None
    except w.Dhcp6Error as e:
        print(f"responder: malformed client message ignored: {e}", file=sys.stderr, flush=True)
        return None
    client = msg.get(w.OPT_CLIENTID)
    if msg.msg_type not in (w.SOLICIT, w.REQUEST, w.RENEW, w.REBIND) or client is None:
        return None
    prefix = lease_for(client)
    if prefix is None:
        return None  # the pool is exhausted
    t1, t2, pref, valid = timers
    opts: list[tuple[int, bytes]] = [(w.OPT_CLIENTID, client), (w.OPT_SERVERID, SERVER_DUID)]
    if ia is not None:
        opts.append((w.OPT_IA_PD, w.encode_ia_pd(ia.iaid, (w.IaPrefix(prefix, pref, valid),), t1, t2)[4:]))
    body = w.Message(w.ADVERTISE if msg.msg_type == w.SOLICIT else w.REPLY, msg.txid, tuple(opts)).encode()
    if raw is not None and (always or w.OPT_S46_CONT_MAPE in asked):
        body += raw  # verbatim, last: its header may claim more than the packet holds
    return body


def serve(iface: str, pool: IPv6Network, delegated_len: int, timers: tuple[int, int, int, int],
          raw: bytes | None, always: bool, ready: Path | None) -> None:
    ifindex = socket.if_nametoindex(iface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("::", w.SERVER_PORT, 0, 0))
    mreq = socket.inet_pton(socket.AF_INET6, w.ALL_SERVERS) + struct.pack("@I", ifindex)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    prefixes = pool.subnets(new_prefix=delegated_len)
    leases: dict[bytes, IPv6Network] = {}

    def lease_for(client: bytes) -> IPv6Network | None:
        if client not in leases:
            nxt = next(prefixes, None)
            if nxt is None:
                return None
            leases[client] = nxt
        return leases[client]

    if ready is not None:
        ready.write_text("ready\n")
    while True:
        data, addr = s.recvfrom(65535)
        reply = answer(data, lease_for, timers, raw, always)
        if reply is not None:
            s.sendto(reply, addr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="a DHCPv6 responder that sends given (possibly broken) option bytes")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--pd-pool", required=True, type=IPv6Network)
    ap.add_argument("--delegated-len", required=True, type=int)
    ap.add_argument("--timers", default="20,32,40,60", help="t1,t2,preferred,valid")
    ap.add_argument("--option-hex", default=None, help="bytes appended to every answer (a whole option 94)")
    ap.add_argument("--always", action="store_true", help="send the bytes even when the ORO lacks 94")
    ap.add_argument("--ready", type=Path, default=None)
    a = ap.parse_args(argv)
    timers = tuple(int(x) for x in a.timers.split(","))
    if len(timers) != 4:
        ap.error(f"--timers {a.timers!r}: give t1,t2,preferred,valid")
    raw = bytes.fromhex(a.option_hex) if a.option_hex else None
    with contextlib.suppress(KeyboardInterrupt):
        serve(a.iface, a.pd_pool, a.delegated_len, timers, raw, a.always, a.ready)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
