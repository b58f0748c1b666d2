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
import itertools
import socket
import struct
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from mapelab.mape import encode_container
from mapelab.mape.codec import encode_option

SOLICIT, ADVERTISE, REQUEST, RENEW, REBIND, REPLY = 1, 2, 3, 5, 6, 7
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


def _opts(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, pos)
        out.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _opt(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


def serve(iface: str, pool: IPv6Network, delegated_len: int, timers: tuple[int, int, int, int],
          raw: bytes | None, always: bool, ready: Path | None) -> None:
    ifindex = socket.if_nametoindex(iface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("::", 547, 0, 0))
    mreq = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack("@I", ifindex)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    prefixes = pool.subnets(new_prefix=delegated_len)
    leases: dict[bytes, IPv6Network] = {}
    t1, t2, pref, valid = timers
    if ready is not None:
        ready.write_text("ready\n")
    for _ in itertools.count():
        data, addr = s.recvfrom(65535)
        if len(data) < 4 or data[0] not in (SOLICIT, REQUEST, RENEW, REBIND):
            continue
        opts = _opts(data[4:])
        client = next((b for c, b in opts if c == 1), None)
        if client is None:
            continue
        oro = next((b for c, b in opts if c == 6), b"")
        asked = {int.from_bytes(oro[i : i + 2], "big") for i in range(0, len(oro) - 1, 2)}
        ia = next((b for c, b in opts if c == 25), None)
        iaid = ia[:4] if ia and len(ia) >= 4 else b"\0\0\0\1"
        if client not in leases:
            try:
                leases[client] = next(prefixes)
            except StopIteration:
                continue
        p = leases[client]
        iaprefix = _opt(26, struct.pack("!IIB", pref, valid, p.prefixlen) + p.network_address.packed)
        body = _opt(1, client) + _opt(2, SERVER_DUID)
        if ia is not None:
            body += _opt(25, iaid + struct.pack("!II", t1, t2) + iaprefix)
        if raw is not None and (always or 94 in asked):
            body += raw  # verbatim, last: its header may claim more than the packet holds
        mtype = ADVERTISE if data[0] == SOLICIT else REPLY
        s.sendto(bytes([mtype]) + data[1:4] + body, addr)


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
