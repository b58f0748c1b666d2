"""The reference CE's DHCPv6 client without sockets: wire format, lease parsing and the state machine
driven by a fake clock and a scripted server (RFC 8415 §18 exchanges, RFC 7598 option 94)."""

from __future__ import annotations

import itertools
import random
import struct
from ipaddress import IPv6Address, IPv6Network

import pytest

from mapelab import scenario as scenarios
from mapelab.ce.daemon import dhcp6client as d
from mapelab.mape import encode_container
from mapelab.mape.codec import encode_option
from mapelab.netio import dhcp6 as w

MAC = bytes.fromhex("020000000001")
DUID = w.duid_ll(MAC)
IAID = d.default_iaid(MAC)
SERVER = w.duid_ll(bytes.fromhex("02000000aaaa"))
SC = scenarios.load("cosmote-like")
PREFIX = SC.first_prefix()


def test_duid_ll_and_iaid() -> None:
    assert bytes.fromhex("00030001") + MAC == DUID
    assert IAID == 0x00000001


def test_solicit_has_clientid_elapsed_ia_pd_and_oro_with_94() -> None:
    msg = w.client_message(w.SOLICIT, 0xABCDEF, DUID, IAID, elapsed_cs=12, oro=d.DEFAULT_ORO)
    raw = msg.encode()
    assert raw[:4] == bytes([1, 0xAB, 0xCD, 0xEF])
    back = w.Message.decode(raw)
    assert back == msg
    assert back.get(w.OPT_CLIENTID) == DUID
    assert back.get(w.OPT_SERVERID) is None
    assert back.get(w.OPT_ELAPSED_TIME) == struct.pack("!H", 12)
    oro = back.get(w.OPT_ORO)
    assert oro is not None and 94 in struct.unpack(f"!{len(oro) // 2}H", oro)
    ia = w.decode_ia_pd(back.get(w.OPT_IA_PD) or b"")
    assert ia == w.IaPd(IAID, 0, 0, ())


def test_release_has_serverid_prefix_and_no_oro() -> None:
    msg = w.client_message(w.RELEASE, 1, DUID, IAID, server_duid=SERVER, oro=d.DEFAULT_ORO,
                           prefixes=(w.IaPrefix(PREFIX, 0, 0),))
    assert msg.get(w.OPT_SERVERID) == SERVER and msg.get(w.OPT_ORO) is None
    assert w.decode_ia_pd(msg.get(w.OPT_IA_PD) or b"").prefixes[0].prefix == PREFIX


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x07\x00\x00", "4-byte header"),
        (b"\x07\x00\x00\x01\x00\x01\x00\x09abc", "says length 9"),
        (b"\x07\x00\x00\x01\x00", "trailing"),
    ],
)
def test_malformed_messages_say_where(data: bytes, needle: str) -> None:
    with pytest.raises(w.Dhcp6Error, match=needle):
        w.Message.decode(data)


def reply(msg_type: int, txid: int, prefixes: list[tuple[IPv6Network, int, int]], *, t1: int = 20, t2: int = 32,
          mape: bytes | None = None, status: int | None = None, ia_status: int | None = None) -> bytes:
    opts: list[tuple[int, bytes]] = [(w.OPT_SERVERID, SERVER), (w.OPT_CLIENTID, DUID)]
    if status is not None:
        opts.append((w.OPT_STATUS_CODE, struct.pack("!H", status) + b"no"))
    ia = struct.pack("!III", IAID, t1, t2)
    for p, pref, valid in prefixes:
        ia += w.option(w.OPT_IAPREFIX, struct.pack("!IIB", pref, valid, p.prefixlen) + p.network_address.packed)
    if ia_status is not None:
        ia += w.option(w.OPT_STATUS_CODE, struct.pack("!H", ia_status))
    opts.append((w.OPT_IA_PD, ia))
    if mape is not None:
        opts.append((94, mape))
    return w.Message(msg_type, txid, tuple(opts)).encode()


MAPE_BODY = encode_container(SC.container())[4:]


def test_lease_from_reply_decodes_option_94_with_the_mape_codec() -> None:
    msg = w.Message.decode(reply(w.REPLY, 1, [(PREFIX, 40, 60)], mape=MAPE_BODY))
    lease, problem = d.lease_from_reply(msg, IAID, "fe80::1", 100.0)
    assert problem == "" and lease is not None
    assert lease.prefix == PREFIX and (lease.t1, lease.t2, lease.valid) == (20, 32, 60)
    assert lease.has_mape and lease.containers[0].rules == SC.rules
    assert lease.containers[0].brs == SC.brs


def test_discarded_container_is_reported_with_the_reason() -> None:
    bad = MAPE_BODY + encode_option(4242, b"x")  # unknown sub-option: RFC 7598 §5 SHOULD discard
    msg = w.Message.decode(reply(w.REPLY, 1, [(PREFIX, 40, 60)], mape=bad))
    lease, _ = d.lease_from_reply(msg, IAID, "fe80::1", 0.0)
    assert lease is not None and not lease.has_mape
    assert "unsupported sub-option 4242" in lease.discarded[0]


def test_renumbering_reply_prefers_the_prefix_with_lifetime() -> None:
    new = IPv6Network("2001:db8:6200:4400::/56")
    msg = w.Message.decode(reply(w.REPLY, 1, [(PREFIX, 0, 0), (new, 40, 60)], mape=MAPE_BODY))
    lease, _ = d.lease_from_reply(msg, IAID, "fe80::1", 0.0)
    assert lease is not None and lease.prefix == new


def test_t1_t2_zero_are_chosen_by_the_client() -> None:
    msg = w.Message.decode(reply(w.REPLY, 1, [(PREFIX, 100, 200)], t1=0, t2=0))
    lease, _ = d.lease_from_reply(msg, IAID, "fe80::1", 0.0)
    assert lease is not None and (lease.t1, lease.t2) == (50, 80)


@pytest.mark.parametrize(("kw", "needle"), [({"status": 2}, "NoAddrsAvail"), ({"ia_status": 6}, "NoPrefixAvail")])
def test_status_codes_become_problems(kw: dict[str, int], needle: str) -> None:
    msg = w.Message.decode(reply(w.REPLY, 1, [], **kw))
    lease, problem = d.lease_from_reply(msg, IAID, "fe80::1", 0.0)
    assert lease is None and needle in problem


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Harness:
    """A client wired to a list of sent messages, an event list and a fake clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[w.Message] = []
        self.events: list[d.LeaseEvent] = []
        self.client = d.Dhcp6Client(
            DUID, IAID, lambda b: self.sent.append(w.Message.decode(b)), self.events.append,
            clock=self.clock, rng=random.Random(1), max_rt=4.0,
        )

    def advance_to_deadline(self) -> None:
        self.clock.t = max(self.clock.t, self.client.next_deadline())
        self.client.on_timer()

    def answer(self, msg_type: int, **kw: object) -> None:
        last = self.sent[-1]
        self.client.on_datagram(reply(msg_type, last.txid, **kw), "fe80::1")  # type: ignore[arg-type]

    def bind(self, mape: bytes | None = MAPE_BODY) -> None:
        self.client.start()
        assert self.sent[-1].msg_type == w.SOLICIT
        self.answer(w.ADVERTISE, prefixes=[(PREFIX, 40, 60)], mape=mape)
        assert len(self.sent) == 1, "waits for the first RT before choosing (RFC 8415 §18.2.1)"
        self.advance_to_deadline()
        req = self.sent[-1]
        assert req.msg_type == w.REQUEST and req.get(w.OPT_SERVERID) == SERVER
        assert w.decode_ia_pd(req.get(w.OPT_IA_PD) or b"").prefixes[0].prefix == PREFIX
        self.answer(w.REPLY, prefixes=[(PREFIX, 40, 60)], mape=mape)


def test_full_cycle_renew_at_t1_rebind_at_t2_expire_at_valid() -> None:
    h = Harness()
    h.bind()
    assert [e.kind for e in h.events] == ["new"] and h.client.state == "bound"
    t0 = h.clock.t
    assert h.client.next_deadline() == pytest.approx(t0 + 20)
    h.advance_to_deadline()
    renew = h.sent[-1]
    assert renew.msg_type == w.RENEW and renew.get(w.OPT_SERVERID) == SERVER
    h.answer(w.REPLY, prefixes=[(PREFIX, 40, 60)], mape=MAPE_BODY)
    assert h.events[-1].kind == "unchanged"
    # Server silent from now on: RENEW retransmits until T2, then REBIND (no SERVERID), then expiry.
    t1 = h.clock.t
    kinds = []
    for _ in range(100):
        h.advance_to_deadline()
        kinds.append(h.sent[-1].msg_type)
        if h.events[-1].kind == "expired":
            break
    assert w.REBIND in kinds
    first_rebind = next(m for m in h.sent if m.msg_type == w.REBIND)
    assert first_rebind.get(w.OPT_SERVERID) is None
    assert h.events[-1].kind == "expired" and h.clock.t == pytest.approx(t1 + 60)
    assert h.sent[-1].msg_type == w.SOLICIT, "back to SOLICIT after expiry"


def test_option_94_disappearing_is_withdrawn_and_returning_is_new() -> None:
    h = Harness()
    h.bind()
    h.client.renew_now()
    h.answer(w.REPLY, prefixes=[(PREFIX, 40, 60)])
    assert h.events[-1].kind == "withdrawn"
    h.client.renew_now()
    h.answer(w.REPLY, prefixes=[(PREFIX, 40, 60)], mape=MAPE_BODY)
    assert h.events[-1].kind == "new"


def test_changed_prefix_is_changed() -> None:
    h = Harness()
    h.bind()
    h.client.renew_now()
    new = IPv6Network("2001:db8:6200:4400::/56")
    h.answer(w.REPLY, prefixes=[(PREFIX, 0, 0), (new, 40, 60)], mape=MAPE_BODY)
    assert h.events[-1].kind == "changed" and h.events[-1].lease.prefix == new  # type: ignore[union-attr]


def test_renew_nobinding_requests_again() -> None:
    h = Harness()
    h.bind()
    h.client.renew_now()
    h.answer(w.REPLY, prefixes=[], ia_status=w.STATUS_NO_BINDING)
    assert h.sent[-1].msg_type == w.REQUEST
    h.answer(w.REPLY, prefixes=[(PREFIX, 40, 60)], mape=MAPE_BODY)
    assert h.events[-1].kind == "unchanged"


def test_solicit_backoff_is_capped_and_first_rt_is_positive() -> None:
    h = Harness()
    h.client.start()
    times = [h.clock.t]
    for _ in range(8):
        h.advance_to_deadline()
        times.append(h.clock.t)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 1.0 < gaps[0] <= 1.1
    assert max(gaps) <= 4.0 * 1.1
    assert all(m.msg_type == w.SOLICIT for m in h.sent)


def test_foreign_txid_and_client_id_are_ignored() -> None:
    h = Harness()
    h.client.start()
    h.client.on_datagram(reply(w.ADVERTISE, (h.sent[-1].txid + 1) & 0xFFFFFF, prefixes=[(PREFIX, 4, 6)]), "fe80::1")
    assert h.client.counters.ignored == 1 and not h.client.advertises


def test_release_reports_released_and_sends_serverid() -> None:
    h = Harness()
    h.bind()
    msg = h.client.release()
    assert msg is not None and msg.msg_type == w.RELEASE and msg.get(w.OPT_SERVERID) == SERVER
    assert h.events[-1].kind == "released" and h.client.lease is None


def test_preference_255_is_taken_at_once() -> None:
    h = Harness()
    h.client.start()
    last = h.sent[-1]
    raw = w.Message.decode(reply(w.ADVERTISE, last.txid, [(PREFIX, 40, 60)]))
    raw = w.Message(raw.msg_type, raw.txid, (*raw.options, (w.OPT_PREFERENCE, b"\xff")))
    h.client.on_datagram(raw.encode(), "fe80::1")
    assert h.sent[-1].msg_type == w.REQUEST


def test_lease_json_is_serialisable() -> None:
    msg = w.Message.decode(reply(w.REPLY, 1, [(PREFIX, 40, 60)], mape=MAPE_BODY))
    lease, _ = d.lease_from_reply(msg, IAID, "fe80::1", 10.0)
    assert lease is not None
    j = lease.to_json(12.0)
    assert j["prefix"] == str(PREFIX) and j["age"] == 2.0 and j["option94"] == [MAPE_BODY.hex()]
    assert IPv6Address(SC.br)
