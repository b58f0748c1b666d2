"""The BR as a process: sockets, the TUN device, the poll loop, state files and clean shutdown.

Contract with whoever starts it (the testbed, a test fixture, a person)::

    ip netns exec <isp-ns> python -m mapelab.testbed.br --scenario PATH --tun NAME --state-dir DIR \\
        [--tunnel-mtu N] [--no-antispoof] [--icmp-source A.B.C.D]

Before starting it, the caller assigns the scenario's BR address(es) to an interface of that
namespace (``ip -6 addr add 2001:db8:ffff::1/128 dev lo nodad``) and enables IPv4 forwarding
there.  The BR creates the TUN device ``NAME`` (up, MTU 65535 so that only the BR applies the
tunnel MTU), writes ``DIR/br.pid``, opens its sockets and writes ``DIR/br.ready``.  *After*
``br.ready`` the caller adds IPv4 routes for every rule IPv4 prefix through the TUN device
(``ip route add 198.51.100.0/24 dev NAME``) — the BR does not touch routing.  The caller's
default IPv4 route (toward the internet node) carries decapsulated traffic out.

While running, ``DIR/br-counters.json`` is rewritten atomically at least every 0.5 s and
``DIR/br-flows.jsonl`` gets one JSON line per new flow.  SIGTERM or SIGINT: the loop ends,
the counters are written a last time, the TUN device disappears with its descriptor, and
``br.ready`` and ``br.pid`` are removed; exit status 0.  A start-up problem (scenario, a BR
address not assigned, the TUN name taken) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from mapelab.netio.ip6ip4 import Ip6Ip4Socket
from mapelab.netio.tun import TunError, open_tun
from mapelab.scenario import ScenarioError, load

from .relay import DEFAULT_ICMP_SOURCE, Relay

TUN_MTU = 65535
COUNTERS_INTERVAL = 0.5
BATCH = 256  # packets drained from one descriptor before looking at the others
ICMP6_FILTER = 1


class StartupError(RuntimeError):
    """A reason the BR cannot start that the caller can fix; printed as one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m mapelab.testbed.br",
        description="mapelab's userspace MAP-E Border Relay (RFC 7597 §8). Run it inside the ISP namespace.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "before: assign the scenario's BR address(es) in this namespace and enable IPv4 forwarding;\n"
            "after DIR/br.ready appears: route every rule IPv4 prefix via the TUN device\n"
            "  (ip route add <prefix> dev NAME).  SIGTERM/SIGINT: clean exit, TUN removed, status 0.\n"
            "files: DIR/br.pid, DIR/br.ready, DIR/br-counters.json (every 0.5 s), DIR/br-flows.jsonl"
        ),
    )
    ap.add_argument("--scenario", required=True, help="scenario name or TOML path (rules and BR addresses)")
    ap.add_argument("--tun", required=True, help="name of the TUN device to create (must not exist)")
    ap.add_argument("--state-dir", required=True, type=Path, help="where br.pid, br.ready, counters and flows go")
    ap.add_argument("--tunnel-mtu", type=int, default=None,
                    help="largest IPv4 packet sent into the tunnel (default: the scenario's WAN MTU − 40)")
    ap.add_argument("--no-antispoof", action="store_true", help="skip the RFC 7597 §8.1 source check (for tests)")
    ap.add_argument("--icmp-source", type=IPv4Address, default=DEFAULT_ICMP_SOURCE,
                    help="IPv4 source of the ICMP errors the BR originates (default 192.0.0.1)")
    return ap.parse_args(argv)


def _wait_for_addresses(brs: tuple[IPv6Address, ...], deadline: float) -> None:
    """Fail early and clearly when a BR address is not assigned here (or still tentative)."""
    for br in brs:
        while True:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((str(br), 0))
                    break
                except OSError as e:
                    if time.monotonic() >= deadline:
                        raise StartupError(
                            f"BR address {br} is not usable in this namespace ({e.strerror}); assign it first, "
                            f"e.g. `ip -6 addr add {br}/128 dev lo nodad`"
                        ) from None
            time.sleep(0.05)


def _icmp6_socket() -> socket.socket:
    """A raw ICMPv6 socket that only wakes us for Packet Too Big (type 2)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    blocked = [0xFFFFFFFF] * 8
    blocked[0] &= ~(1 << 2)  # ICMP6_FILTER_SETPASS(2): a set bit blocks the type
    s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
    s.setblocking(False)
    return s


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class Service:
    """Owns the descriptors and state files of one BR process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        try:
            self.scenario = load(args.scenario)
        except ScenarioError as e:
            raise StartupError(str(e)) from None
        self.tunnel_mtu = args.tunnel_mtu or self.scenario.tunnel_mtu
        if not 68 <= self.tunnel_mtu <= 65535:
            raise StartupError(f"--tunnel-mtu {self.tunnel_mtu}: must be 68..65535 (IPv4 minimum to maximum)")
        self.dir: Path = args.state_dir
        self.stop = False
        self.tun_fd = -1
        self.tunnel: Ip6Ip4Socket | None = None
        self.icmp6: socket.socket | None = None
        self.flows_file: Any = None
        self.errors_logged = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop = True

    def start(self) -> None:
        # Installed first: a SIGTERM during start-up must still end in close(), not a default death
        # that would leave br.pid behind.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "br.ready").unlink(missing_ok=True)
        (self.dir / "br.pid").write_text(f"{os.getpid()}\n")
        _wait_for_addresses(self.scenario.brs, time.monotonic() + 5.0)
        try:
            self.tun_fd = open_tun(self.args.tun, TUN_MTU, ipv6=False)  # IPv4 only: no RS/MLD noise
        except TunError as e:
            raise StartupError(str(e)) from None
        os.set_blocking(self.tun_fd, False)
        self.tunnel = Ip6Ip4Socket(blocking=False)
        self.icmp6 = _icmp6_socket()
        self.flows_file = open(self.dir / "br-flows.jsonl", "a", buffering=1 << 16)  # noqa: SIM115
        tun_fd, tunnel = self.tun_fd, self.tunnel
        self.relay = Relay(
            self.scenario.rules,
            self.scenario.brs,
            tunnel_mtu=self.tunnel_mtu,
            send_tunnel=tunnel.send_raw,
            send_ipv4=lambda pkt: os.write(tun_fd, pkt) and None,
            antispoof=not self.args.no_antispoof,
            icmp_source=self.args.icmp_source,
            flow_log=self.flows_file,
        )
        self.started = time.time()
        self.write_counters()
        (self.dir / "br.ready").write_text(json.dumps({
            "pid": os.getpid(), "tun": self.args.tun, "brs": [str(b) for b in self.scenario.brs],
            "rules_ipv4": [str(r.ipv4_prefix) for r in self.scenario.rules], "tunnel_mtu": self.tunnel_mtu,
            "antispoof": not self.args.no_antispoof,
        }) + "\n")
        print(f"mapelab BR: pid {os.getpid()} tun {self.args.tun} BR {', '.join(map(str, self.scenario.brs))} "
              f"tunnel MTU {self.tunnel_mtu} anti-spoofing {'off' if self.args.no_antispoof else 'on'}; "
              f"route {', '.join(str(r.ipv4_prefix) for r in self.scenario.rules)} via {self.args.tun}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tun_fd >= 0:
            os.close(self.tun_fd)  # non-persistent: the device goes with the descriptor
            self.tun_fd = -1
        if self.tunnel is not None:
            self.tunnel.close()
        if self.icmp6 is not None:
            self.icmp6.close()
        if hasattr(self, "relay"):
            self.write_counters(final=True)
        if self.flows_file is not None:
            self.flows_file.close()
        for name in ("br.ready", "br.pid"):
            (self.dir / name).unlink(missing_ok=True)

    def write_counters(self, final: bool = False) -> None:
        snap = self.relay.snapshot()
        snap.update(pid=os.getpid(), started=self.started, updated=time.time(), running=not final)
        with contextlib.suppress(OSError):
            _write_json_atomic(self.dir / "br-counters.json", snap)
        if self.flows_file is not None and not self.flows_file.closed:
            self.flows_file.flush()

    # -- the loop ---------------------------------------------------------------------------------------

    def _guard(self, exc: BaseException) -> None:
        """A bug must not take the BR down mid-test: count it, show the first few, carry on."""
        self.relay.c.internal_errors += 1
        if self.errors_logged < 5:
            self.errors_logged += 1
            print("mapelab BR: internal error (packet dropped):", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)

    def run(self) -> None:
        assert self.tunnel is not None and self.icmp6 is not None
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        poller = select.poll()
        tun_fd, tunnel_fd, icmp_fd = self.tun_fd, self.tunnel.fileno(), self.icmp6.fileno()
        for fd in (tun_fd, tunnel_fd, icmp_fd, rfd):
            poller.register(fd, select.POLLIN)
        relay = self.relay
        recv_raw = self.tunnel.recv_raw
        from_tunnel, from_ipv4 = relay.from_tunnel, relay.from_ipv4
        icmp_recv = self.icmp6.recv
        read = os.read
        next_write = time.monotonic() + COUNTERS_INTERVAL / 2
        try:
            while not self.stop:  # also true when a signal came during start()
                wait_ms = max(0.0, (next_write - time.monotonic()) * 1000.0)
                for fd, _ev in poller.poll(wait_ms):
                    if fd == tunnel_fd:
                        for _ in range(BATCH):
                            try:
                                data, src, dst = recv_raw()
                            except BlockingIOError:
                                break
                            except OSError as e:
                                self._guard(e)
                                break
                            try:
                                from_tunnel(data, src, dst)
                            except Exception as e:
                                self._guard(e)
                    elif fd == tun_fd:
                        for _ in range(BATCH):
                            try:
                                data = read(tun_fd, 65536)
                            except BlockingIOError:
                                break
                            try:
                                from_ipv4(data)
                            except Exception as e:
                                self._guard(e)
                    elif fd == icmp_fd:
                        for _ in range(BATCH):
                            try:
                                msg = icmp_recv(65536)
                            except BlockingIOError:
                                break
                            try:
                                relay.on_icmpv6(msg)
                            except Exception as e:
                                self._guard(e)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(rfd, 4096)
                now = time.monotonic()
                if now >= next_write:
                    next_write = now + COUNTERS_INTERVAL / 2  # well inside the promised 0.5 s
                    relay.expire()
                    self.write_counters()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        service = Service(args)
    except StartupError as e:
        print(f"mapelab BR: cannot start: {e}", file=sys.stderr)
        return 2
    try:
        try:
            service.start()
        except (StartupError, OSError) as e:
            print(f"mapelab BR: cannot start: {e}", file=sys.stderr)
            return 2
        service.run()
    finally:
        service.close()
    print("mapelab BR: stopped", file=sys.stderr, flush=True)
    return 0
