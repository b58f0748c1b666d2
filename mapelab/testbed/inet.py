"""The IPv4 internet: echo and bulk servers that record who reached them.

Runs in the internet namespace (``python -m mapelab.testbed.inet --flows FILE``) and listens on
every address there (the service addresses 100.65.0.1 and 100.65.0.2):

* TCP 7 — echo; TCP 19 — bulk: the client sends ``N\\n`` and gets N bytes, then EOF;
* UDP 7 — echo;
* ICMP echo — answered by the kernel; a raw ICMP socket sees each request and records it.

Every flow is one JSON line in FILE, written and flushed when it is seen, so a test reads what
the CE's NAT and the BR made of its packets: ``{"proto", "src", "sport", "dst", "dport",
"service", "event", "ts", ...}`` where ``sport`` is the ICMP echo identifier for pings (also
given as ``echo_id``).  TCP flows get an ``open`` line at accept and a ``close`` line with the
byte counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any, TextIO

TCP_ECHO = 7
TCP_BULK = 19
UDP_ECHO = 7
BULK_MAX = 1 << 32


class Recorder:
    def __init__(self, path: Path) -> None:
        self.f: TextIO = path.open("a", buffering=1)

    def __call__(self, **rec: Any) -> None:
        rec["ts"] = round(time.time(), 6)
        self.f.write(json.dumps(rec) + "\n")


async def tcp_echo(rec: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    src, sport = writer.get_extra_info("peername")[:2]
    dst, dport = writer.get_extra_info("sockname")[:2]
    base = {"proto": "tcp", "src": src, "sport": sport, "dst": dst, "dport": dport, "service": "echo"}
    rec(**base, event="open")
    total = 0
    try:
        while data := await reader.read(65536):
            total += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        rec(**base, event="close", bytes_in=total, bytes_out=total)
        writer.close()


async def tcp_bulk(rec: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    src, sport = writer.get_extra_info("peername")[:2]
    dst, dport = writer.get_extra_info("sockname")[:2]
    base = {"proto": "tcp", "src": src, "sport": sport, "dst": dst, "dport": dport, "service": "bulk"}
    rec(**base, event="open")
    sent = 0
    asked = -1
    try:
        line = await reader.readline()
        asked = int(line.strip() or b"0")
        if not 0 <= asked <= BULK_MAX:
            raise ValueError(asked)
        chunk = b"\x5a" * 65536
        while sent < asked:
            n = min(len(chunk), asked - sent)
            writer.write(chunk[:n])
            await writer.drain()
            sent += n
        writer.write_eof()
    except (ConnectionError, OSError, ValueError):
        pass
    finally:
        rec(**base, event="close", asked=asked, bytes_out=sent)
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, rec: Recorder, dst: str) -> None:
        self.rec = rec
        self.dst = dst

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.rec(proto="udp", src=addr[0], sport=addr[1], dst=self.dst, dport=UDP_ECHO, service="echo",
                 event="packet", bytes_in=len(data))
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def icmp_reader(rec: Recorder, sock: socket.socket) -> None:
    try:
        data = sock.recv(65535)
    except OSError:
        return
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 8 or data[ihl] != 8:  # echo requests only
        return
    src = socket.inet_ntoa(data[12:16])
    dst = socket.inet_ntoa(data[16:20])
    ident, seq = struct.unpack_from("!HH", data, ihl + 4)
    rec(proto="icmp", src=src, sport=ident, echo_id=ident, seq=seq, dst=dst, dport=0, service="ping",
        event="packet", bytes_in=len(data) - ihl)


async def serve(flows: Path, ready: Path | None) -> None:
    rec = Recorder(flows)
    loop = asyncio.get_running_loop()
    await asyncio.start_server(lambda r, w: tcp_echo(rec, r, w), "0.0.0.0", TCP_ECHO, reuse_address=True)
    await asyncio.start_server(lambda r, w: tcp_bulk(rec, r, w), "0.0.0.0", TCP_BULK, reuse_address=True)
    # One UDP socket per address, so the reply leaves from the address the client used.
    for addr in _local_ipv4():
        await loop.create_datagram_endpoint(lambda a=addr: UdpEcho(rec, a), local_addr=(addr, UDP_ECHO))
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.setblocking(False)
    loop.add_reader(icmp.fileno(), icmp_reader, rec, icmp)
    if ready is not None:
        ready.write_text("ready\n")
    await asyncio.Event().wait()


def _local_ipv4() -> list[str]:
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [ln.split()[3].split("/")[0] for ln in out.splitlines() if " inet " in f" {ln} " and "127." not in ln]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mapelab's recording IPv4 internet (run inside its namespace)")
    ap.add_argument("--flows", type=Path, required=True, help="JSONL file every flow is appended to")
    ap.add_argument("--ready", type=Path, default=None, help="file written once every socket listens")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.flows, args.ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
