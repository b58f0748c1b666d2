"""A small DHCPv6 client (RFC 8415) for the reference CE: IA_PD plus the MAP-E container.

Why our own: no packaged client both asks for option 94 and hands the container over intact
(dhcpcd mis-decodes OPTION_S46_RULE, odhcp6c is not in Debian), and the CE must run anywhere
with only python3 — so this module uses plain sockets and ``struct``, no scapy.

The client is a state machine driven from outside (``fileno``/``on_readable``/``next_deadline``/
``on_timer``) so the daemon can multiplex it with its tunnel in one ``select`` loop and unit tests
can drive it with a fake clock and a fake transport.  It implements SOLICIT → ADVERTISE →
REQUEST → REPLY, RENEW at T1, REBIND at T2, expiry at the valid lifetime, and RELEASE on stop,
with the retransmission rules of RFC 8415 §15 (``max_rt`` caps the back-off so a test bed
recovers in seconds rather than the RFC's hour).  Option 94 is decoded with mapelab.mape's
codec; discarded containers are logged with the codec's reason and reported in the lease.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from mapelab.mape import CodecError, Container, mape_containers
from mapelab.netio.dhcp6 import (
    ADVERTISE,
    ALL_SERVERS,
    CLIENT_PORT,
    INFINITY,
    MSG_NAMES,
    OPT_CLIENTID,
    OPT_DNS_SERVERS,
    OPT_DOMAIN_LIST,
    OPT_IA_PD,
    OPT_PREFERENCE,
    OPT_S46_CONT_MAPE,
    OPT_SERVERID,
    OPT_STATUS_CODE,
    REBIND,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SERVER_PORT,
    SOLICIT,
    STATUS_NAMES,
    STATUS_SUCCESS,
    Dhcp6Error,
    IaPrefix,
    Message,
    client_message,
    decode_ia_pd,
    encode_ia_pd,
    status_code,
)

log = logging.getLogger("mapelab.ce.dhcp6")

# -- protocol (the wire format is mapelab.netio.dhcp6's) -------------------------------------------

DEFAULT_ORO = (OPT_S46_CONT_MAPE, OPT_DNS_SERVERS, OPT_DOMAIN_LIST)

# RFC 8415 §7.6 transmission parameters: (IRT, MRT, MRC) in seconds / count.
SOL_TIMEOUT, SOL_MAX_RT = 1.0, 3600.0
REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC = 1.0, 30.0, 10
REN_TIMEOUT, REN_MAX_RT = 10.0, 600.0
REB_TIMEOUT, REB_MAX_RT = 10.0, 600.0
REL_TIMEOUT, REL_MAX_RC = 1.0, 4


# -- the lease ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """What a REPLY gave us.  ``obtained`` is on the client's monotonic clock; ``options`` keeps the
    REPLY's top-level options so the raw container bytes can be shown and re-decoded."""

    server_duid: bytes
    server_address: str
    prefix: IPv6Network | None
    preferred: int
    valid: int
    t1: int
    t2: int
    obtained: float
    containers: tuple[Container, ...] = ()
    discarded: tuple[str, ...] = ()
    option94: tuple[bytes, ...] = ()
    dns: tuple[IPv6Address, ...] = ()

    @property
    def has_mape(self) -> bool:
        return self.prefix is not None and bool(self.containers)

    def mape_key(self) -> tuple[object, ...] | None:
        """What decides whether the CE must re-apply: prefix and the containers' rules and BRs
        (the codec's byte offsets are left out, they change with option order only)."""
        if not self.has_mape:
            return None
        return (self.prefix, tuple((c.rules, c.brs) for c in self.containers))

    def expires_at(self) -> float:
        return float("inf") if self.valid == INFINITY else self.obtained + self.valid

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "server_duid": self.server_duid.hex(),
            "server_address": self.server_address,
            "prefix": str(self.prefix) if self.prefix else None,
            "preferred": self.preferred,
            "valid": self.valid,
            "t1": self.t1,
            "t2": self.t2,
            "age": round(now - self.obtained, 3),
            "option94": [b.hex() for b in self.option94],
            "containers": len(self.containers),
            "discarded": list(self.discarded),
            "dns": [str(a) for a in self.dns],
        }


def lease_from_reply(msg: Message, iaid: int, server_address: str, now: float) -> tuple[Lease | None, str]:
    """A REPLY (or ADVERTISE) → (lease, problem).  ``problem`` is "" on success, otherwise the
    status that tells the state machine what to do next (e.g. ``NoPrefixAvail``, ``NoBinding``)."""
    top = status_code(msg.get(OPT_STATUS_CODE))
    if top[0] != STATUS_SUCCESS:
        return None, f"{STATUS_NAMES.get(top[0], top[0])}: {top[1]}"
    server = msg.get(OPT_SERVERID)
    if server is None:
        return None, "no SERVERID"
    ia = None
    for body in msg.get_all(OPT_IA_PD):
        candidate = decode_ia_pd(body)
        if candidate.iaid == iaid:
            ia = candidate
    if ia is None:
        return None, "NoPrefixAvail: no IA_PD for our IAID"
    if ia.status[0] != STATUS_SUCCESS:
        return None, f"{STATUS_NAMES.get(ia.status[0], ia.status[0])}: {ia.status[1]}"
    usable = [p for p in ia.prefixes if p.valid > 0 and p.status[0] == STATUS_SUCCESS and p.preferred <= p.valid]
    if not usable:
        return None, "NoPrefixAvail: every delegated prefix has valid lifetime 0"
    # A server renumbering in a RENEW lists the old prefix with lifetime 0 and the new one: the
    # longest preferred lifetime is the one the server wants us on.
    best = max(usable, key=lambda p: (p.preferred, p.valid))
    t1, t2 = ia.t1, ia.t2
    if t1 == 0 or t2 == 0 or t1 > t2:
        # RFC 8415 §14.2: T1/T2 left to the client — 0.5 and 0.8 of the shortest preferred lifetime.
        shortest = min(p.preferred for p in usable)
        t1, t2 = (INFINITY, INFINITY) if shortest == INFINITY else (shortest // 2, shortest * 4 // 5)
    raw94 = tuple(msg.get_all(OPT_S46_CONT_MAPE))
    discarded: list[str] = []
    containers: list[Container] = []
    if raw94:
        try:
            good, bad = mape_containers(msg.options_bytes())
        except CodecError as e:  # cannot happen after iter_tlvs parsed the message; kept for safety
            good, bad = [], [e]
        containers = good
        discarded = [f"option 94 discarded: {e}" for e in bad]
    dns_body = msg.get(OPT_DNS_SERVERS) or b""
    dns = tuple(IPv6Address(dns_body[i : i + 16]) for i in range(0, len(dns_body) - 15, 16))
    return (
        Lease(
            server_duid=server,
            server_address=server_address,
            prefix=best.prefix,
            preferred=best.preferred,
            valid=best.valid,
            t1=t1,
            t2=t2,
            obtained=now,
            containers=tuple(containers),
            discarded=tuple(discarded),
            option94=raw94,
            dns=dns,
        ),
        "",
    )


# -- events ---------------------------------------------------------------------------------------

NEW = "new"
CHANGED = "changed"
UNCHANGED = "unchanged"
WITHDRAWN = "withdrawn"  # the lease is still valid but option 94 is gone (or every container was discarded)
EXPIRED = "expired"
RELEASED = "released"


@dataclass(frozen=True)
class LeaseEvent:
    """What changed for MAP-E.  ``lease`` is None for expired/released."""

    kind: str
    lease: Lease | None
    previous: Lease | None = None
    detail: str = ""


def classify(previous: Lease | None, current: Lease) -> str:
    """new / changed / unchanged / withdrawn, judged on what MAP-E uses (prefix and container)."""
    before, after = (previous.mape_key() if previous else None), current.mape_key()
    if after is None:
        return WITHDRAWN if before is not None else (NEW if previous is None else UNCHANGED)
    if before is None:
        return NEW
    return UNCHANGED if before == after else CHANGED


# -- transport ------------------------------------------------------------------------------------


def wait_link_local(ifname: str, timeout: float = 10.0) -> IPv6Address:
    """The interface's usable (non-tentative) link-local address: the source RFC 8415 §13.1 asks for.

    Fails with the fix (DAD still running, interface down, IPv6 disabled) after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        out = subprocess.run(
            ["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"],
            capture_output=True, text=True, check=False,
        )
        last = (out.stdout + out.stderr).strip()
        for line in out.stdout.splitlines():
            words = line.split()
            if "inet6" in words and "tentative" not in words and "dadfailed" not in words:
                return IPv6Address(words[words.index("inet6") + 1].split("/")[0])
        if time.monotonic() >= deadline:
            raise OSError(
                f"{ifname}: no usable IPv6 link-local address after {timeout:.0f}s (ip says: {last or 'nothing'}); "
                f"bring the interface up, enable IPv6 on it, or wait for DAD (accept_dad=0 skips it)"
            )
        time.sleep(0.1)


class Dhcp6Socket:
    """UDP 546 on one interface, sending to ff02::1:2 from the link-local address."""

    def __init__(self, ifname: str, link_local: IPv6Address) -> None:
        self.ifname = ifname
        self.scope = socket.if_nametoindex(ifname)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.scope)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        try:
            s.bind((str(link_local), CLIENT_PORT, 0, self.scope))
        except OSError as e:
            s.close()
            raise OSError(
                f"cannot bind [{link_local}%{ifname}]:{CLIENT_PORT}: {e}; is another DHCPv6 client running in "
                "this namespace? stop it first"
            ) from None
        s.setblocking(False)
        self.sock = s

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (ALL_SERVERS, SERVER_PORT, 0, self.scope))

    def recv(self) -> tuple[bytes, str]:
        data, addr = self.sock.recvfrom(65535)
        return data, addr[0]

    def close(self) -> None:
        self.sock.close()


def interface_mac(ifname: str) -> bytes:
    with open(f"/sys/class/net/{ifname}/address") as f:
        text = f.read().strip()
    return bytes.fromhex(text.replace(":", ""))


# -- the state machine ----------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One retransmitted message exchange (RFC 8415 §15)."""

    msg_type: int
    txid: int
    start: float
    irt: float
    mrt: float
    mrc: int = 0  # 0: unlimited
    deadline: float = float("inf")  # MRD as an absolute time
    rt: float = 0.0
    count: int = 0
    next_at: float = 0.0


@dataclass
class ClientCounters:
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    malformed: int = 0


class Dhcp6Client:
    """IA_PD + option 94 client.  ``on_event`` receives a :class:`LeaseEvent` for every REPLY that
    binds or renews, for withdrawal of option 94, for expiry and for release."""

    def __init__(
        self,
        duid: bytes,
        iaid: int,
        send: Callable[[bytes], None],
        on_event: Callable[[LeaseEvent], None],
        *,
        oro: tuple[int, ...] = DEFAULT_ORO,
        max_rt: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.duid = duid
        self.iaid = iaid
        self._send = send
        self.on_event = on_event
        self.oro = oro
        self.max_rt = max_rt
        self.clock = clock
        self.rng = rng or random.Random()
        self.state = "init"
        self.lease: Lease | None = None
        self.exchange: _Exchange | None = None
        self.advertises: list[tuple[int, Message, str]] = []
        self.first_rt_over = False
        self.chosen: tuple[Message, str] | None = None
        self.counters = ClientCounters()

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> None:
        self._solicit()

    def next_deadline(self) -> float:
        times = []
        if self.exchange is not None:
            times.append(self.exchange.next_at)
        if self.lease is not None:
            times.append(self._lease_deadline())
        return min(times) if times else float("inf")

    def on_timer(self) -> None:
        now = self.clock()
        lease = self.lease
        if lease is not None and now >= lease.expires_at():
            self.lease = None
            log.warning("lease on %s expired (valid lifetime %ss)", lease.prefix, lease.valid)
            self.on_event(LeaseEvent(EXPIRED, None, lease, f"valid lifetime {lease.valid}s ran out"))
            self._solicit()
            return
        if self.state == "bound" and lease is not None:
            if now >= lease.obtained + lease.t2:
                self._rebind()
            elif now >= lease.obtained + lease.t1:
                self._renew()
        elif self.state == "renewing" and lease is not None and now >= lease.obtained + lease.t2:
            self._rebind()
        ex = self.exchange
        if ex is not None and now >= ex.next_at:
            self._retransmit(ex, now)

    def on_datagram(self, data: bytes, source: str) -> None:
        try:
            msg = Message.decode(data)
        except Dhcp6Error as e:
            self.counters.malformed += 1
            log.warning("malformed DHCPv6 datagram from %s ignored: %s", source, e)
            return
        self.counters.received[msg.name] = self.counters.received.get(msg.name, 0) + 1
        ex = self.exchange
        if ex is None or msg.txid != ex.txid or msg.get(OPT_CLIENTID) != self.duid:
            self.counters.ignored += 1
            log.debug("%s from %s ignored (txid %06x, not ours or no exchange)", msg.name, source, msg.txid)
            return
        try:
            if msg.msg_type == ADVERTISE and ex.msg_type == SOLICIT:
                self._on_advertise(msg, source)
            elif msg.msg_type == REPLY and ex.msg_type in (REQUEST, RENEW, REBIND):
                self._on_reply(msg, source, ex.msg_type)
            elif msg.msg_type == REPLY and ex.msg_type == RELEASE:
                self.exchange = None
                self.state = "released"
            else:
                self.counters.ignored += 1
        except Dhcp6Error as e:
            self.counters.malformed += 1
            log.warning("%s from %s ignored: %s", msg.name, source, e)

    def renew_now(self) -> None:
        """Start a RENEW at once (what the driver's ``renew()`` asks for); SOLICIT if unbound."""
        if self.lease is None:
            self._solicit()
        else:
            self._renew()

    def release(self) -> Message | None:
        """Send RELEASE for the current lease (once; the caller may wait briefly for the REPLY)."""
        lease = self.lease
        if lease is None or lease.prefix is None:
            return None
        now = self.clock()
        ex = _Exchange(RELEASE, self._txid(), now, REL_TIMEOUT, 0, mrc=REL_MAX_RC)
        self.exchange = ex
        self.state = "releasing"
        msg = self._transmit(ex, now)
        self.lease = None
        self.on_event(LeaseEvent(RELEASED, None, lease, "RELEASE sent on stop"))
        return msg

    # -- states -------------------------------------------------------------------------------

    def _txid(self) -> int:
        return self.rng.getrandbits(24)

    def _lease_deadline(self) -> float:
        lease = self.lease
        assert lease is not None
        times = [lease.expires_at()]
        if self.state == "bound":
            times.append(lease.obtained + min(lease.t1, lease.t2))
        elif self.state == "renewing":
            times.append(lease.obtained + lease.t2)
        return min(times)

    def _begin(self, msg_type: int, irt: float, mrt: float, mrc: int = 0, deadline: float = float("inf")) -> None:
        now = self.clock()
        ex = _Exchange(msg_type, self._txid(), now, irt, min(mrt, self.max_rt), mrc, deadline)
        self.exchange = ex
        self._transmit(ex, now)

    def _solicit(self) -> None:
        self.state = "soliciting"
        self.advertises = []
        self.first_rt_over = False
        self._begin(SOLICIT, SOL_TIMEOUT, SOL_MAX_RT)

    def _request(self, advertise: Message, source: str) -> None:
        self.state = "requesting"
        self.chosen = (advertise, source)
        self._begin(REQUEST, REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC)

    def _renew(self) -> None:
        lease = self.lease
        assert lease is not None
        self.state = "renewing"
        self._begin(RENEW, min(REN_TIMEOUT, self.max_rt), REN_MAX_RT, deadline=lease.obtained + lease.t2)

    def _rebind(self) -> None:
        lease = self.lease
        assert lease is not None
        self.state = "rebinding"
        self._begin(REBIND, min(REB_TIMEOUT, self.max_rt), REB_MAX_RT, deadline=lease.expires_at())

    def _message_for(self, ex: _Exchange, now: float) -> Message:
        elapsed = min(0xFFFF, int((now - ex.start) * 100))
        server = None
        prefixes: tuple[IaPrefix, ...] = ()
        if ex.msg_type == REQUEST and self.chosen is not None:
            adv = self.chosen[0]
            server = adv.get(OPT_SERVERID)
            ia = next((decode_ia_pd(b) for b in adv.get_all(OPT_IA_PD)), None)
            if ia is not None:
                prefixes = tuple(IaPrefix(p.prefix, 0, 0) for p in ia.prefixes if p.valid)
        elif ex.msg_type in (RENEW, REBIND, RELEASE) and self.lease is not None and self.lease.prefix is not None:
            if ex.msg_type != REBIND:
                server = self.lease.server_duid
            prefixes = (IaPrefix(self.lease.prefix, 0, 0),)
        return client_message(
            ex.msg_type, ex.txid, self.duid, self.iaid, elapsed_cs=elapsed, server_duid=server,
            prefixes=prefixes, oro=self.oro,
        )

    def _transmit(self, ex: _Exchange, now: float) -> Message:
        msg = self._message_for(ex, now)
        try:
            self._send(msg.encode())
        except OSError as e:
            log.warning("sending %s failed: %s (will retransmit)", msg.name, e)
        self.counters.sent[msg.name] = self.counters.sent.get(msg.name, 0) + 1
        log.info("sent %s txid %06x (#%d)", msg.name, ex.txid, ex.count + 1)
        # RFC 8415 §15: RT = IRT + RAND*IRT, then 2*RTprev + RAND*RTprev, capped at MRT; the first
        # SOLICIT's RAND is strictly positive.
        rand = self.rng.uniform(-0.1, 0.1)
        if ex.count == 0:
            if ex.msg_type == SOLICIT:
                rand = abs(rand) or 0.05
            ex.rt = ex.irt + rand * ex.irt
        else:
            ex.rt = 2 * ex.rt + rand * ex.rt
        if ex.mrt and ex.rt > ex.mrt:
            ex.rt = ex.mrt + rand * ex.mrt
        ex.count += 1
        ex.next_at = min(now + ex.rt, ex.deadline)
        return msg

    def _retransmit(self, ex: _Exchange, now: float) -> None:
        if ex.msg_type == SOLICIT and not self.first_rt_over:
            self.first_rt_over = True
            if self.advertises:
                self._choose_advertise()
                return
        if ex.msg_type == RELEASE:
            if ex.mrc and ex.count >= ex.mrc:
                self.exchange = None
                self.state = "released"
                return
        elif ex.mrc and ex.count >= ex.mrc:
            log.warning("%s unanswered after %d transmissions: back to SOLICIT", MSG_NAMES[ex.msg_type], ex.count)
            self._solicit()
            return
        if now >= ex.deadline:
            # RENEW ran to T2 (on_timer starts REBIND) or REBIND ran to expiry (on_timer expires).
            self.exchange = None
            return
        self._transmit(ex, now)

    def _on_advertise(self, msg: Message, source: str) -> None:
        lease, problem = lease_from_reply(msg, self.iaid, source, self.clock())
        if lease is None:
            log.info("ADVERTISE from %s without a usable prefix (%s) ignored", source, problem)
            return
        pref_body = msg.get(OPT_PREFERENCE)
        pref = pref_body[0] if pref_body else 0
        self.advertises.append((pref, msg, source))
        # RFC 8415 §18.2.1: preference 255, or any ADVERTISE after the first RT, is taken at once.
        if pref == 255 or self.first_rt_over:
            self._choose_advertise()

    def _choose_advertise(self) -> None:
        pref, msg, source = max(self.advertises, key=lambda a: a[0])
        log.info("chose ADVERTISE from %s (preference %d)", source, pref)
        self._request(msg, source)

    def _on_reply(self, msg: Message, source: str, sent: int) -> None:
        now = self.clock()
        lease, problem = lease_from_reply(msg, self.iaid, source, now)
        if lease is None:
            log.warning("REPLY to %s from %s: %s", MSG_NAMES[sent], source, problem)
            if problem.startswith("NoBinding") and sent in (RENEW, REBIND) and self.lease is not None:
                # RFC 8415 §18.2.10.1: NoBinding → REQUEST our current prefix from this server.
                self._request(_advertise_like(msg, self.iaid, self.lease), source)
                return
            if problem.startswith("UseMulticast") or problem.startswith("UnspecFail"):
                return  # retransmission continues (we always multicast)
            if sent == REQUEST or problem.startswith("NoPrefixAvail") or problem.startswith("NotOnLink"):
                old = self.lease
                self.lease = None
                if old is not None and sent != REQUEST:
                    self.on_event(LeaseEvent(EXPIRED, None, old, f"server withdrew the prefix: {problem}"))
                self._solicit()
            return
        for reason in lease.discarded:
            log.warning("%s", reason)
        previous = self.lease
        self.lease = lease
        self.exchange = None
        self.state = "bound"
        kind = classify(previous, lease)
        log.info(
            "REPLY to %s: %s prefix %s T1 %s T2 %s valid %s, %d MAP-E container(s)",
            MSG_NAMES[sent], kind, lease.prefix, lease.t1, lease.t2, lease.valid, len(lease.containers),
        )
        self.on_event(LeaseEvent(kind, lease, previous))


def _advertise_like(reply: Message, iaid: int, lease: Lease) -> Message:
    """A stand-in ADVERTISE naming the server and our current prefix, for a REQUEST after NoBinding."""
    server = reply.get(OPT_SERVERID) or lease.server_duid
    assert lease.prefix is not None
    ia = encode_ia_pd(iaid, (IaPrefix(lease.prefix, 0, 1),))
    return Message(ADVERTISE, 0, ((OPT_SERVERID, server), (OPT_IA_PD, ia[4:])))


def default_iaid(mac: bytes) -> int:
    """IAID from the MAC's last four bytes: stable across restarts, different per CE."""
    return int.from_bytes(mac[-4:].rjust(4, b"\0"), "big")

