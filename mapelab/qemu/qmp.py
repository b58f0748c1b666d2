"""A minimal synchronous QMP client (QEMU Machine Protocol over a unix socket).

Why our own: we need four commands (capabilities, quit, query-status, human-monitor-command
for ``info usernet``), and a blocking client with a deadline is simpler to reason about during
shutdown than an asyncio library.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

from .errors import MachineError

_USERNET_FWD = re.compile(
    r"TCP\[HOST_FORWARD\]\s+-?\d+\s+(?P<haddr>\S+)\s+(?P<hport>\d+)\s+(?P<gaddr>\S+)\s+(?P<gport>\d+)"
)


def parse_usernet_forwards(text: str) -> list[tuple[str, int, str, int]]:
    """Host forwards from HMP ``info usernet``: (host addr, host port, guest addr, guest port)."""
    return [
        (m["haddr"], int(m["hport"]), m["gaddr"], int(m["gport"]))
        for m in _USERNET_FWD.finditer(text)
    ]


class Qmp:
    """One QMP connection. ``connect`` retries until the socket exists (QEMU may still be starting)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sock: socket.socket | None = None
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def connect(self, timeout: float = 10.0) -> Qmp:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.connect(str(self.path))
                self.sock = s
                self._read_message(deadline)  # greeting
                self.execute("qmp_capabilities", timeout=max(0.5, deadline - time.monotonic()))
                return self
            except (FileNotFoundError, ConnectionRefusedError, OSError) as e:
                last = e
                s.close()
                self.sock = None
                time.sleep(0.05)
        raise MachineError(f"QMP socket {self.path}: no answer within {timeout:.0f}s ({last}); is QEMU running?")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"QMP {self.path}: no reply in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"QMP {self.path}: QEMU closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Run one command; return its ``return`` value; events that arrive meanwhile go to ``events``."""
        if self.sock is None:
            raise MachineError(f"QMP {self.path}: not connected")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise MachineError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
            return reply.get("return")

    def hmp(self, command_line: str, timeout: float = 10.0) -> str:
        """A human-monitor command (e.g. ``info usernet``), its text output."""
        return str(self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout))

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
