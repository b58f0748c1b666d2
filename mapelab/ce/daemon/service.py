"""The reference Linux MAP-E CE daemon: ``python -m mapelab.ce.daemon --wan IF --lan IF ...``.

Why it exists: the e2e suite must prove every assertion against a CE that runs on every commit
(the OpenBSD CE cannot run everywhere), so mapelab carries a small, strict CE of its own.  It needs
only python3, iproute2 and nft, so the same file runs in a network namespace here and inside a
Linux VM later.

What it does, driven by its own DHCPv6 client (``dhcp6client``):

* on a lease with a valid MAP-E container it derives the parameters with ``mapelab.mape`` and
  applies them: the MAP address (/128 on the WAN), the tunnel (userspace TUN + raw socket from
  ``mapelab.netio`` where the kernel has no ip6tnl, else ip6tnl with ``encaplimit none``), the IPv4
  address and default route on it, and the nftables table of ``nat.render`` (port-set NAT in one
  rule, MSS clamp, egress guard, ingress check), tunnel MTU = WAN MTU − 40;
* on any change of prefix, rule or BR it withdraws everything, flushes conntrack and re-applies;
* when option 94 disappears or the lease expires it withdraws IPv4 entirely;
* in userspace mode it decapsulates itself and applies RFC 7597 §8 anti-spoofing (packets from the
  BR are exempt) and drops packets not for its address and port set, counting every reason;
* it writes ``DIR/state.json`` atomically on every change (counters at most once a second) and
  ``DIR/ce.pid``; SIGTERM sends RELEASE, withdraws and exits; SIGUSR1 renews at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Interface, IPv6Address
from pathlib import Path
from typing import Any

from mapelab.mape import MapeError, MapeParams, derive, spoof_reason, tunnel_destination
from mapelab.netio.dhcp6 import duid_ll

from . import nat, system
from .dhcp6client import (
    Dhcp6Client,
    Dhcp6Socket,
    Lease,
    LeaseEvent,
    default_iaid,
    interface_mac,
    wait_link_local,
)

log = logging.getLogger("mapelab.ce")

STATE_VERSION = 1
COUNTER_WRITE_INTERVAL = 1.0


def params_to_json(p: MapeParams) -> dict[str, Any]:
    """The derived parameters as the driver reads them back (``driver.CeParams.from_json``)."""
    return {
        "ipv4": str(p.ipv4),
        "ipv4_len": p.ipv4_len,
        "psid": p.psid,
        "psid_len": p.psid_len,
        "psid_offset": p.psid_offset,
        "map_address": str(p.map_address),
        "br": str(p.br) if p.br else None,
        "delegated_prefix": str(p.delegated_prefix),
        "port_ranges": p.port_set.ranges(),
        "port_count": len(p.port_set),
        "rule": {
            "ipv6": str(p.rule.ipv6_prefix),
            "ipv4": str(p.rule.ipv4_prefix),
            "ea_len": p.rule.ea_len,
            "forwarding": p.rule.forwarding,
        },
        "notes": list(p.notes),
    }


@dataclass
class Applied:
    """What is configured right now, so withdraw() removes exactly that."""

    params: MapeParams
    rules: tuple[Any, ...]
    tunnel_mode: str
    tunnel_mtu: int
    generation: int
    applied_at: str


@dataclass
class Options:
    wan: str
    lan: str
    lan_address: IPv4Interface
    state_dir: Path
    tunnel: str = "auto"  # auto | userspace | ip6tnl
    tunnel_name: str = "mape0"
    wan_mtu: int | None = None
    max_rt: float = 8.0
    faults: tuple[str, ...] = ()


@dataclass
class Datapath:
    """The userspace softwire: TUN (IPv4 side) ↔ raw IPv6 protocol-4 socket (tunnel side)."""

    tun_fd: int
    sock: Any  # mapelab.netio.Ip6Ip4Socket
    counters: Counter[str] = field(default_factory=Counter)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.tun_fd)


class ReferenceCe:
    """Lease events in, system configuration out; one instance per daemon."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.state_dir = opts.state_dir
        self.applied: Applied | None = None
        self.lease: Lease | None = None
        self.generation = 0
        self.status = "starting"
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.counters: Counter[str] = Counter()
        self.datapath: Datapath | None = None
        self.client: Dhcp6Client | None = None
        self.dirty = True
        self.last_write = 0.0
        self.first_params: MapeParams | None = None  # for the ignore-renumbering fault
        self.tunnel_mode = opts.tunnel
        self.sel = selectors.DefaultSelector()

    # -- setup ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """LAN address, forwarding, WAN up; pick the tunnel mode."""
        o = self.opts
        for ifname in (o.wan, o.lan):
            if not system.interface_exists(ifname):
                raise system.CeSystemError(
                    f"interface {ifname} does not exist in this namespace; run the CE where the testbed slot "
                    "put its WAN and LAN (ip netns exec <ce_netns> ...)"
                )
        if o.wan_mtu:
            system.ip("link", "set", o.wan, "mtu", str(o.wan_mtu))
        system.ip("link", "set", o.wan, "up")
        system.ip("link", "set", o.lan, "up")
        system.ip("addr", "replace", str(o.lan_address), "dev", o.lan)
        system.sysctl("net.ipv4.ip_forward", 1)
        if self.tunnel_mode == "auto":
            self.tunnel_mode = "ip6tnl" if system.ip6tnl_available() else "userspace"
        elif self.tunnel_mode == "ip6tnl" and not system.ip6tnl_available():
            raise system.CeSystemError(
                "--tunnel ip6tnl: this kernel cannot create ip6tnl devices (no ip6_tunnel module); "
                "use --tunnel userspace or --tunnel auto"
            )
        log.info("tunnel mode %s", self.tunnel_mode)
        # A previous instance killed with SIGKILL may have left its table, tunnel, MAP address and
        # NAT bindings behind: its state.json says which MAP address it had.
        system.nft(nat.render_delete())
        if self.tunnel_mode == "ip6tnl" and system.interface_exists(o.tunnel_name):
            system.ip("link", "del", o.tunnel_name, check=False)
        try:
            old = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            old = {}
        old_map = (old.get("params") or {}).get("map_address") if isinstance(old, dict) else None
        if old_map:
            log.info("removing %s left by a previous instance (pid %s)", old_map, old.get("pid"))
            system.ip("-6", "addr", "del", f"{old_map}/128", "dev", o.wan, check=False)
        with contextlib.suppress(system.CeSystemError, OSError):
            system.flush_conntrack()

    # -- lease events -----------------------------------------------------------------------------

    def on_event(self, ev: LeaseEvent) -> None:
        self.lease = ev.lease
        entry = {"time": _now(), "kind": ev.kind, "detail": ev.detail}
        if ev.lease is not None:
            entry["prefix"] = str(ev.lease.prefix)
            if ev.lease.discarded:
                entry["discarded"] = list(ev.lease.discarded)
        self.events = ([*self.events, entry])[-50:]
        log.info("lease event %s %s", ev.kind, ev.detail)
        self.reconcile()

    def desired(self) -> tuple[MapeParams, tuple[Any, ...]] | None:
        """What the current lease asks for, or None (no lease, no option 94, or underivable)."""
        lease = self.lease
        if lease is None or not lease.has_mape or lease.prefix is None:
            return None
        for c in lease.containers:
            try:
                return derive(c.rules, lease.prefix, c.brs), c.rules
            except MapeError as e:
                msg = f"MAP-E container unusable for prefix {lease.prefix}: {e}"
                log.warning("%s", msg)
                self.errors = [*self.errors, msg][-20:]
        return None

    def reconcile(self) -> None:
        want = self.desired()
        if "ignore-renumbering" in self.opts.faults and want is not None and self.first_params is not None:
            want = (self.first_params, want[1])
        have = self.applied
        if want is None:
            if have is not None:
                self.withdraw("lease has no usable MAP-E container" if self.lease else "no lease")
            self.status = "withdrawn" if self.lease is not None or self.generation else self.status
            if self.lease is None and self.generation == 0:
                self.status = "soliciting"
            self.dirty = True
            return
        params, rules = want
        if have is not None and have.params == params and have.rules == rules:
            self.dirty = True
            return
        if have is not None:
            self.withdraw("parameters changed")
        try:
            self.apply(params, rules)
        except (system.CeSystemError, OSError) as e:
            log.error("applying MAP-E failed: %s", e)
            self.errors = [*self.errors, f"apply: {e}"][-20:]
            with contextlib.suppress(Exception):
                self.withdraw("apply failed")
            self.status = "error"
        self.dirty = True

    # -- apply / withdraw -------------------------------------------------------------------------

    def tunnel_mtu(self) -> int:
        return system.interface_mtu(self.opts.wan) - 40

    def apply(self, params: MapeParams, rules: tuple[Any, ...]) -> None:
        o = self.opts
        tif = o.tunnel_name
        mtu = self.tunnel_mtu()
        if params.br is None:
            raise system.CeSystemError(f"no BR for prefix {params.delegated_prefix}; the container must name one")
        log.info(
            "applying: %s psid %d/%d offset %d map %s br %s mtu %d",
            params.ipv4_text, params.psid, params.psid_len, params.psid_offset, params.map_address, params.br, mtu,
        )
        # Order matters: the guard and NAT exist before any route can send a packet into the tunnel.
        system.nft(nat.render(params, nat.NatPlan(tif, mtu, self.opts.faults)))
        system.ip("-6", "addr", "replace", f"{params.map_address}/128", "dev", o.wan, "nodad")
        if self.tunnel_mode == "ip6tnl":
            system.ip(
                "link", "add", tif, "type", "ip6tnl", "mode", "ipip6", "local", str(params.map_address),
                "remote", str(params.br), "encaplimit", "none", "dev", o.wan,
            )
            system.ip("link", "set", tif, "mtu", str(mtu), "up")
        else:
            from mapelab.netio import Ip6Ip4Socket, open_tun

            fd = open_tun(tif, mtu)
            os.set_blocking(fd, False)
            sock = Ip6Ip4Socket(blocking=False)
            self.datapath = Datapath(fd, sock)
            with contextlib.suppress(system.CeSystemError):
                system.sysctl(f"net.ipv6.conf.{tif}.disable_ipv6", 1)
            self.sel.register(fd, selectors.EVENT_READ, "tun")
            self.sel.register(sock.fileno(), selectors.EVENT_READ, "tunnel")
        system.ip("addr", "replace", f"{params.ipv4}/32", "dev", tif)
        for route in system.ip_json("-4", "route", "show", "default"):
            if route.get("dev") != tif:
                # Inside a VM the management link may hold the default route: say what is replaced.
                log.warning("replacing the IPv4 default route %s with one via %s", route, tif)
        system.ip("route", "replace", "default", "dev", tif)
        system.flush_conntrack()
        self.generation += 1
        self.applied = Applied(params, tuple(rules), self.tunnel_mode, mtu, self.generation, _now())
        if self.first_params is None:
            self.first_params = params
        self.status = "provisioned"

    def withdraw(self, why: str) -> None:
        """Remove everything apply() configured; each step tolerates a half-applied state."""
        have = self.applied
        o = self.opts
        log.info("withdrawing (%s)", why)
        system.ip("route", "del", "default", "dev", o.tunnel_name, check=False)
        if self.datapath is not None:
            for fd in (self.datapath.tun_fd, self.datapath.sock.fileno()):
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(fd)
            self.counters.update(self.datapath.counters)
            self.datapath.close()
            self.datapath = None
        if system.interface_exists(o.tunnel_name):
            system.ip("link", "del", o.tunnel_name, check=False)
        system.nft(nat.render_delete())
        if have is not None:
            system.ip("-6", "addr", "del", f"{have.params.map_address}/128", "dev", o.wan, check=False)
        try:
            system.flush_conntrack()
        except (system.CeSystemError, OSError) as e:
            log.warning("%s", e)
        self.applied = None
        self.status = "withdrawn"
        self.dirty = True

    # -- userspace datapath ---------------------------------------------------------------------

    def from_lan(self) -> None:
        """TUN → encapsulate toward the BR (or a peer CE under an FMR)."""
        dp, have = self.datapath, self.applied
        if dp is None or have is None:
            return
        from mapelab.netio.packets import Malformed, parse

        p = have.params
        src6 = p.map_address.packed
        br = p.br.packed if p.br else b""
        fmr = any(r.forwarding for r in have.rules)
        my4 = p.ipv4.packed
        guard = not {"no-guard", "nat-whole-range"} & set(self.opts.faults)
        for _ in range(256):
            try:
                pkt = os.read(dp.tun_fd, 65535)
            except BlockingIOError:
                return
            if not pkt or pkt[0] >> 4 != 4:
                dp.counters["tx-not-ipv4"] += 1
                continue
            try:
                h = parse(pkt, verify_checksum=False)
            except Malformed as e:
                dp.counters[f"tx-malformed-{e}"] += 1
                continue
            # Second line behind the nft guard: nothing leaves with a foreign address or port.
            if guard and (
                h.src != my4 or (p.port_set.restricted and h.sport is not None and h.sport not in p.port_set)
            ):
                dp.counters["tx-drop-outside-set"] += 1
                continue
            dst = br
            if fmr:
                d = tunnel_destination(p, have.rules, ipaddress.IPv4Address(h.dst), h.dport)
                dst = d.packed if d else br
            try:
                dp.sock.send_raw(pkt, src6, dst)
            except OSError as e:
                if not dp.counters[f"tx-error-{e.errno}"]:
                    log.error(
                        "encapsulating toward %s failed: %s — the WAN needs an IPv6 route to the BR "
                        "(the ISP's router advertisement, or a static route)", ipaddress.IPv6Address(dst), e,
                    )
                dp.counters[f"tx-error-{e.errno}"] += 1
                continue
            dp.counters["tx-packets"] += 1
            dp.counters["tx-bytes"] += len(pkt)

    def from_tunnel(self) -> None:
        """Raw socket → checks of RFC 7597 §8 → TUN."""
        dp, have = self.datapath, self.applied
        if dp is None or have is None:
            return
        from mapelab.netio.packets import Malformed, parse

        p = have.params
        my6 = p.map_address.packed
        br = p.br.packed if p.br else b""
        my4 = p.ipv4.packed
        for _ in range(256):
            try:
                inner, src, dst = dp.sock.recv_raw()
            except BlockingIOError:
                return
            if dst and dst != my6:
                dp.counters["rx-drop-not-map-address"] += 1
                continue
            try:
                h = parse(inner)
            except Malformed as e:
                dp.counters[f"rx-malformed-{e}"] += 1
                continue
            if src != br:
                reason = spoof_reason(have.rules, IPv6Address(src), ipaddress.IPv4Address(h.src), h.sport)
                if reason is not None:
                    dp.counters[f"rx-drop-spoof-{reason}"] += 1
                    continue
            if h.dst != my4:
                dp.counters["rx-drop-not-our-address"] += 1
                continue
            if p.port_set.restricted and h.dport is not None and h.dport not in p.port_set:
                dp.counters["rx-drop-port-outside-set"] += 1
                continue
            try:
                os.write(dp.tun_fd, inner[: h.total])
            except OSError as e:
                dp.counters[f"rx-error-{e.errno}"] += 1
                continue
            dp.counters["rx-packets"] += 1
            dp.counters["rx-bytes"] += len(inner)

    # -- state file ---------------------------------------------------------------------------------

    def all_counters(self) -> dict[str, int]:
        c = Counter(self.counters)
        if self.datapath is not None:
            c.update(self.datapath.counters)
        if self.client is not None:
            for k, v in self.client.counters.sent.items():
                c[f"dhcp-sent-{k}"] = v
            for k, v in self.client.counters.received.items():
                c[f"dhcp-received-{k}"] = v
            c["dhcp-ignored"] = self.client.counters.ignored
            c["dhcp-malformed"] = self.client.counters.malformed
        return dict(sorted(c.items()))

    def snapshot(self) -> dict[str, Any]:
        have = self.applied
        now = time.monotonic()
        return {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "updated": _now(),
            "status": self.status,
            "generation": self.generation,
            "wan": self.opts.wan,
            "lan": self.opts.lan,
            "lan_address": str(self.opts.lan_address),
            "tunnel": {
                "mode": self.tunnel_mode,
                "name": self.opts.tunnel_name,
                "mtu": have.tunnel_mtu if have else None,
                "mss": have.tunnel_mtu - 40 if have else None,
            },
            "params": params_to_json(have.params) if have else None,
            "applied_at": have.applied_at if have else None,
            "lease": self.lease.to_json(now) if self.lease else None,
            "dhcp_state": self.client.state if self.client else None,
            "faults": list(self.opts.faults),
            "counters": self.all_counters(),
            "events": self.events,
            "errors": self.errors,
        }

    def write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.dirty and now - self.last_write < COUNTER_WRITE_INTERVAL:
            return
        if not force and not self.dirty and self.datapath is None:
            return
        system.write_atomic(self.state_dir / "state.json", json.dumps(self.snapshot(), indent=2) + "\n")
        self.dirty = False
        self.last_write = now


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- the daemon -------------------------------------------------------------------------------------


def run(opts: Options) -> int:
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    system.write_atomic(opts.state_dir / "ce.pid", f"{os.getpid()}\n")
    ce = ReferenceCe(opts)
    stop = {"flag": False, "renew": False}
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGUSR1:
            stop["renew"] = True
        else:
            stop["flag"] = True

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(s, on_signal)
    dsock: Dhcp6Socket | None = None
    try:
        ce.prepare()
        ce.write_state(force=True)
        ll = wait_link_local(opts.wan)
        mac = interface_mac(opts.wan)
        dsock = Dhcp6Socket(opts.wan, ll)
        client = Dhcp6Client(duid_ll(mac), default_iaid(mac), dsock.send, ce.on_event, max_rt=opts.max_rt)
        ce.client = client
        ce.sel.register(dsock.fileno(), selectors.EVENT_READ, "dhcp")
        ce.sel.register(rfd, selectors.EVENT_READ, "signal")
        log.info("DHCPv6 on %s from %s, DUID %s", opts.wan, ll, client.duid.hex())
        client.start()
        ce.status = "soliciting"
        ce.dirty = True
        last_state = client.state
        while not stop["flag"]:
            if stop["renew"]:
                stop["renew"] = False
                log.info("renew requested (SIGUSR1)")
                client.renew_now()
            timeout = max(0.0, min(client.next_deadline() - time.monotonic(), COUNTER_WRITE_INTERVAL))
            for key, _ in ce.sel.select(timeout):
                if key.data == "dhcp":
                    try:
                        data, src = dsock.recv()
                    except BlockingIOError:
                        continue
                    client.on_datagram(data, src)
                elif key.data == "tun":
                    ce.from_lan()
                elif key.data == "tunnel":
                    ce.from_tunnel()
                elif key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(rfd, 64)
            if time.monotonic() >= client.next_deadline():
                client.on_timer()
            if client.state != last_state:
                last_state = client.state
                ce.dirty = True
            ce.write_state()
        log.info("stopping: RELEASE, withdraw")
        if ce.client is not None and ce.client.lease is not None and dsock is not None:
            client.release()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and client.state == "releasing":
                r, _, _ = select.select([dsock.fileno()], [], [], max(0.0, deadline - time.monotonic()))
                if r:
                    with contextlib.suppress(BlockingIOError):
                        client.on_datagram(*dsock.recv())
        if ce.applied is not None:
            ce.withdraw("stopping")
        ce.status = "stopped"
        ce.write_state(force=True)
        return 0
    except Exception as e:  # whatever went wrong, leave no half-configured CE behind
        if isinstance(e, system.CeSystemError | OSError):
            log.error("%s", e)
        else:
            log.exception("internal error (a bug in mapelab.ce; please report it with this log)")
        ce.errors.append(f"{type(e).__name__}: {e}")
        ce.status = "failed"
        with contextlib.suppress(Exception):
            if ce.applied is not None:
                ce.withdraw("fatal error")
        with contextlib.suppress(Exception):
            ce.write_state(force=True)
        return 1
    finally:
        if dsock is not None:
            dsock.close()
        with contextlib.suppress(OSError):
            (opts.state_dir / "ce.pid").unlink()


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m mapelab.ce.daemon",
        description="mapelab's reference MAP-E CE (RFC 7597): DHCPv6 PD + option 94 → tunnel, port-set NAT.",
    )
    ap.add_argument("--wan", required=True, help="WAN interface (DHCPv6, MAP address, tunnel)")
    ap.add_argument("--lan", required=True, help="LAN interface")
    ap.add_argument("--lan-address", required=True, help="the CE's LAN address, A.B.C.D/len")
    ap.add_argument("--state-dir", required=True, type=Path, help="where state.json, ce.pid go")
    ap.add_argument("--tunnel", choices=("auto", "userspace", "ip6tnl"), default="auto",
                    help="auto: ip6tnl when the kernel has it, else userspace (TUN + raw socket)")
    ap.add_argument("--tunnel-name", default="mape0")
    ap.add_argument("--wan-mtu", type=int, default=None, help="set the WAN MTU first (default: leave it)")
    ap.add_argument("--max-rt", type=float, default=8.0,
                    help="cap on DHCPv6 retransmission timeouts in seconds (RFC 8415's are up to 3600)")
    ap.add_argument("--fault", action="append", default=[], choices=nat.FAULTS,
                    help="break the CE on purpose, for tests of the e2e tests")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    try:
        lan_address = IPv4Interface(a.lan_address)
    except ValueError as e:
        ap.error(f"--lan-address {a.lan_address}: {e} (write it like 192.168.1.1/24)")
    if "/" not in a.lan_address:
        ap.error(f"--lan-address {a.lan_address}: give the prefix length too, e.g. {a.lan_address}/24")
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return Options(
        wan=a.wan, lan=a.lan, lan_address=lan_address, state_dir=a.state_dir, tunnel=a.tunnel,
        tunnel_name=a.tunnel_name, wan_mtu=a.wan_mtu, max_rt=a.max_rt, faults=tuple(a.fault),
    )


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        print("mapelab.ce.daemon: must run as root (it configures interfaces and nftables)", file=sys.stderr)
        return 2
    socket.setdefaulttimeout(None)
    return run(parse_args(argv))
