"""The LAN host's traffic generator: K flows on demand, and a JSON account of each.

Run inside a LAN host namespace::

    ip netns exec ml1a2b-lan1 python -m mapelab.testbed.lanclient tcp --target 100.65.0.1 --count 8

Modes (each flow is independent and reported separately, so a test can tell *which* flows a
CE's port-set NAT let through):

* ``tcp``  — K TCP echo flows to port 7 (``--hold S`` keeps all of them open S seconds at once);
* ``udp``  — K UDP echo flows to port 7, each from its own socket (its own source port);
* ``ping`` — K ICMP echo requests, each with its own identifier;
* ``bulk`` — K TCP downloads of ``--size`` bytes from port 19, with throughput.

Prints one JSON object ``{"mode", "target", "count", "ok", "flows": [{"proto", "sport",
"ok", "error", "bytes", "ms"}, ...]}``; exit status 0 when every flow worked, 1 otherwise.
``sport`` is the LAN-side source port (or echo id); the internet's records show what the
CE's NAT turned it into.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TCP_ECHO, TCP_BULK, UDP_ECHO = 7, 19, 7


def _flow(proto: str, fn: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    out: dict[str, Any] = {"proto": proto, "sport": None, "ok": False, "error": None, "bytes": 0}
    try:
        fn(out)
        out["ok"] = out["error"] is None
    except (OSError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["ms"] = round((time.monotonic() - t0) * 1000, 2)
    return out


def tcp_echo(target: str, port: int, payload: int, timeout: float, hold: float, barrier: threading.Barrier | None
             ) -> dict[str, Any]:
    def run(out: dict[str, Any]) -> None:
        with socket.create_connection((target, port), timeout=timeout) as s:
            out["sport"] = s.getsockname()[1]
            data = os.urandom(payload)
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            out["bytes"] = len(got)
            if got != data:
                out["error"] = f"echo mismatch: sent {len(data)} bytes, got {len(got)} back"
            if barrier is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(timeout + hold)
            if hold:
                time.sleep(hold)

    return _flow("tcp", run)


def udp_echo(target: str, port: int, payload: int, timeout: float) -> dict[str, Any]:
    def run(out: dict[str, Any]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((target, port))
            out["sport"] = s.getsockname()[1]
            data = os.urandom(payload)
            deadline = time.monotonic() + timeout
            for _attempt in range(3):
                s.send(data)
                try:
                    s.settimeout(max(0.05, min(timeout / 3, deadline - time.monotonic())))
                    got = s.recv(65536)
                except TimeoutError:
                    continue
                out["bytes"] = len(got)
                if got != data:
                    out["error"] = "echo mismatch"
                return
            out["error"] = f"no UDP echo within {timeout} s"

    return _flow("udp", run)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(target: str, ident: int, payload: int, timeout: float) -> dict[str, Any]:
    def run(out: dict[str, Any]) -> None:
        out["sport"] = ident
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            body = os.urandom(payload)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
            pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + body), ident, 1) + body
            deadline = time.monotonic() + timeout
            for _attempt in range(3):
                s.sendto(pkt, (target, 0))
                step = time.monotonic() + timeout / 3
                while (left := min(step, deadline) - time.monotonic()) > 0:
                    s.settimeout(left)
                    try:
                        data, addr = s.recvfrom(65535)
                    except TimeoutError:
                        break
                    ihl = (data[0] & 0x0F) * 4
                    t, _c, _ck, rid, _seq = struct.unpack_from("!BBHHH", data, ihl)
                    if t == 0 and rid == ident and addr[0] == target:
                        out["bytes"] = len(data) - ihl - 8
                        return
            out["error"] = f"no echo reply within {timeout} s"

    return _flow("icmp", run)


def bulk(target: str, port: int, size: int, timeout: float) -> dict[str, Any]:
    def run(out: dict[str, Any]) -> None:
        t0 = time.monotonic()
        with socket.create_connection((target, port), timeout=timeout) as s:
            out["sport"] = s.getsockname()[1]
            s.sendall(f"{size}\n".encode())
            got = 0
            while chunk := s.recv(1 << 16):
                got += len(chunk)
            out["bytes"] = got
            dt = time.monotonic() - t0
            out["mbit_s"] = round(got * 8 / dt / 1e6, 2) if dt > 0 else None
            if got != size:
                out["error"] = f"asked for {size} bytes, got {got}"

    return _flow("tcp", run)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="open K flows from a LAN host and report each as JSON")
    ap.add_argument("mode", choices=["tcp", "udp", "ping", "bulk"])
    ap.add_argument("--target", required=True, help="an internet address (status: inet_addresses)")
    ap.add_argument("--port", type=int, default=None, help="server port (default: 7 echo, 19 bulk)")
    ap.add_argument("--count", type=int, default=1, help="number of flows K")
    ap.add_argument("--size", type=int, default=1 << 20, help="bulk: bytes to download per flow")
    ap.add_argument("--payload", type=int, default=64, help="echo payload bytes per flow")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per flow")
    ap.add_argument("--hold", type=float, default=0.0, help="tcp: keep all flows open this long at once")
    ap.add_argument("--parallel", type=int, default=64, help="flows in flight at once")
    a = ap.parse_args(argv)
    k = max(0, a.count)
    workers = max(1, min(k, a.parallel))
    base_id = int.from_bytes(os.urandom(2), "big")
    barrier = threading.Barrier(k) if a.mode == "tcp" and a.hold and k <= a.parallel else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if a.mode == "tcp":
            futs = [pool.submit(tcp_echo, a.target, a.port or TCP_ECHO, a.payload, a.timeout, a.hold, barrier)
                    for _ in range(k)]
        elif a.mode == "udp":
            futs = [pool.submit(udp_echo, a.target, a.port or UDP_ECHO, a.payload, a.timeout) for _ in range(k)]
        elif a.mode == "ping":
            futs = [pool.submit(ping, a.target, (base_id + i) & 0xFFFF or 1, a.payload, a.timeout) for i in range(k)]
        else:
            futs = [pool.submit(bulk, a.target, a.port or TCP_BULK, a.size, a.timeout) for _ in range(k)]
        flows = [f.result() for f in futs]
    ok = sum(f["ok"] for f in flows)
    print(json.dumps({"mode": a.mode, "target": a.target, "count": k, "ok": ok, "flows": flows}))
    return 0 if ok == k else 1


if __name__ == "__main__":
    sys.exit(main())
