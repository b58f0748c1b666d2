"""The one DHCPv6 wire codec: strict walks, round trips, and the frame reader the ISP's snooping uses."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, IPv6Network

import pytest

from mapelab.netio import dhcp6 as w

DUID = w.duid_ll(bytes.fromhex("020000000001"))
PREFIX = IPv6Network("2001:db8:6200:4200::/56")


def reply(prefix: IPv6Network = PREFIX, valid: int = 60, extra: bytes = b"") -> bytes:
    ia = w.encode_ia_pd(1, (w.IaPrefix(prefix, 40, valid),), 20, 32)
    return w.Message(w.REPLY, 0x123456, ((w.OPT_CLIENTID, DUID), (w.OPT_SERVERID, DUID))).encode() + ia + extra


def test_message_round_trip_and_ia_pd() -> None:
    raw = reply()
    msg = w.Message.decode(raw)
    assert msg.msg_type == w.REPLY and msg.txid == 0x123456 and msg.encode() == raw
    ia = w.decode_ia_pd(msg.get(w.OPT_IA_PD) or b"")
    assert ia.iaid == 1 and (ia.t1, ia.t2) == (20, 32) and ia.prefixes[0].prefix == PREFIX


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 20])
def test_a_truncated_option_is_an_error_not_a_shorter_message(cut: int) -> None:
    raw = reply()
    with pytest.raises(w.Dhcp6Error, match=r"says length|trailing byte"):
        w.Message.decode(raw[:-cut])


def test_a_length_running_past_the_container_is_an_error() -> None:
    body = struct.pack("!III", 1, 0, 0) + struct.pack("!HH", w.OPT_IAPREFIX, 40) + b"\0" * 25
    with pytest.raises(w.Dhcp6Error, match="IA_PD: option 26 at offset 0 says length 40"):
        w.decode_ia_pd(body)


def test_short_iaprefix_and_bad_prefix_length_and_odd_oro() -> None:
    with pytest.raises(w.Dhcp6Error, match="IAPREFIX of 24"):
        w.decode_ia_pd(struct.pack("!III", 1, 0, 0) + w.option(w.OPT_IAPREFIX, b"\0" * 24))
    bad_len = struct.pack("!IIB", 0, 0, 129) + bytes(16)
    with pytest.raises(w.Dhcp6Error, match="> 128"):
        w.decode_ia_pd(struct.pack("!III", 1, 0, 0) + w.option(w.OPT_IAPREFIX, bad_len))
    with pytest.raises(w.Dhcp6Error, match="ORO of 3"):
        w.decode_oro(b"\0\x5e\0")
    assert w.decode_oro(w.encode_oro((94, 23))) == (94, 23)


def test_client_message_lists_what_rfc8415_asks() -> None:
    msg = w.client_message(w.RENEW, 7, DUID, 9, server_duid=b"srv", prefixes=(w.IaPrefix(PREFIX, 0, 0),), oro=(94,))
    assert [c for c, _ in msg.options] == [w.OPT_CLIENTID, w.OPT_SERVERID, w.OPT_ELAPSED_TIME, w.OPT_IA_PD, w.OPT_ORO]
    release = w.client_message(w.RELEASE, 7, DUID, 9, oro=(94,))
    assert release.get(w.OPT_ORO) is None


def _frame(udp_payload: bytes, sport: int = 547, dport: int = 546, nh: int = 17) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(udp_payload), 0) + udp_payload
    ip6 = struct.pack("!IHBB", 6 << 28, len(udp), nh, 64) + IPv6Address("fe80::1").packed + \
        IPv6Address("fe80::2").packed
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x86DD) + ip6 + udp


def test_server_message_in_frame_reads_replies_and_ignores_the_rest() -> None:
    got = w.server_message_in_frame(_frame(reply()))
    assert got is not None and got[0] == IPv6Address("fe80::2") and got[1].msg_type == w.REPLY
    assert w.server_message_in_frame(_frame(reply(), sport=546, dport=547)) is None  # a client's message
    assert w.server_message_in_frame(_frame(reply(), nh=6)) is None  # not UDP
    assert w.server_message_in_frame(_frame(reply()) + b"\0" * 20) is not None  # Ethernet padding is not payload
    with pytest.raises(w.Dhcp6Error):
        w.server_message_in_frame(_frame(reply()[:-3]))  # a REPLY whose last option is cut


def test_isp_snooping_takes_no_route_from_a_broken_reply() -> None:
    from mapelab.testbed import ra

    assert [d.prefix for d in ra.parse_reply(_frame(reply()))] == [PREFIX]
    with pytest.raises(w.Dhcp6Error):
        ra.parse_reply(_frame(reply()[:-5]))


def test_responder_answers_strictly_and_appends_raw_bytes_verbatim() -> None:
    from mapelab.testbed import responder

    solicit = w.client_message(w.SOLICIT, 0xABC, DUID, 5, oro=(94,)).encode()
    out = responder.answer(solicit, lambda _c: PREFIX, (20, 32, 40, 60), b"\0\x5e\0\x10broken", False)
    assert out is not None and out.endswith(b"\0\x5e\0\x10broken")
    msg = w.Message.decode(out[: -len(b"\0\x5e\0\x10broken")])
    assert msg.msg_type == w.ADVERTISE and msg.txid == 0xABC
    assert w.decode_ia_pd(msg.get(w.OPT_IA_PD) or b"").prefixes[0].prefix == PREFIX
    no_oro = w.client_message(w.SOLICIT, 0xABC, DUID, 5).encode()
    assert not responder.answer(no_oro, lambda _c: PREFIX, (20, 32, 40, 60), b"x", False).endswith(b"x")
    assert responder.answer(solicit[:-1], lambda _c: PREFIX, (20, 32, 40, 60), None, False) is None
