"""Serial console driver on pexpect, made for installers as much as for Linux.

What it guards against (each seen in practice by projects that automate OpenBSD installs):

* stale text matching an old prompt — :meth:`SerialConsole.send` drains pending output first,
  and ``expect(..., fresh=True)`` drains before waiting;
* firmware and installers dropping typed bursts — ``char_delay`` types one character at a time;
* a guest that has already failed while we wait for success — fail-fast patterns (``panic:``,
  ``ddb{``, …) end the wait at once with the console tail in the error;
* long phases that are slow but alive — ``idle`` timeouts reset whenever output arrives, while
  ``timeout`` caps the whole wait.

The transcript of every boot is QEMU's own serial logfile (``console-N.log``, complete even
before we connect); what we type goes to ``console-N.typed.log``.
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import select
import socket
import sys
import termios
import time
import tty
from collections.abc import Sequence
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from .errors import ConsoleError

Pattern = str | re.Pattern[str]


class _Tap:
    """pexpect ``logfile_read`` sink: marks progress and keeps the last lines for error messages."""

    def __init__(self) -> None:
        self.last_rx = time.monotonic()
        self.total = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=4000)

    def write(self, data: str) -> None:
        if data:
            self.last_rx = time.monotonic()
            self.total += len(data)
            self.tail.extend(data)

    def flush(self) -> None:
        pass

    def lines(self, n: int = 15) -> str:
        text = "".join(self.tail).replace("\r", "")
        return "\n".join(text.splitlines()[-n:])


class SerialConsole:
    """A connection to a guest's serial console (QEMU chardev socket server)."""

    def __init__(self, socket_path: Path, *, transcript: Path | None = None, char_delay: float = 0.0,
                 fail_patterns: Sequence[Pattern] = (), connect_timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.transcript = transcript
        self.char_delay = char_delay
        self.fail_patterns = [re.compile(p) if isinstance(p, str) else p for p in fail_patterns]
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self.child: pexpect.fdpexpect.fdspawn | None = None
        self.tap = _Tap()
        self._typed = None
        self.prompt: str | None = None

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> SerialConsole:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.socket_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise ConsoleError(
                        f"serial socket {self.socket_path}: nothing listens; is the machine running?") from None
                time.sleep(0.05)
        self.sock = s
        self.child = pexpect.fdpexpect.fdspawn(s, encoding="utf-8", codec_errors="replace", maxread=65536)
        self.child.logfile_read = self.tap
        if self.transcript is not None:
            typed = self.transcript.with_suffix(".typed.log")
            self._typed = open(typed, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        return self

    def close(self) -> None:
        self.child = None  # the socket below owns the file descriptor
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._typed is not None:
            self._typed.close()
            self._typed = None

    def __enter__(self) -> SerialConsole:
        return self.connect() if self.child is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _c(self) -> pexpect.fdpexpect.fdspawn:
        if self.child is None:
            raise ConsoleError(f"serial console {self.socket_path} is not connected")
        return self.child

    # -- output -----------------------------------------------------------------------------
    def drain(self, settle: float = 0.05) -> str:
        """Read and discard whatever the guest printed so far, so old prompts cannot match."""
        c = self._c()
        got = []
        while True:
            try:
                got.append(c.read_nonblocking(65536, timeout=settle))
            except pexpect.TIMEOUT:
                break
            except pexpect.EOF:
                break
        got.insert(0, c.buffer)
        c.buffer = ""
        c.before = ""
        return "".join(got)

    def expect(self, patterns: Pattern | Sequence[Pattern], *, timeout: float, idle: float | None = None,
               fail: Sequence[Pattern] = (), fresh: bool = False, what: str | None = None) -> re.Match[str]:
        """Wait for one of ``patterns``; return its match (``.re`` tells which).

        ``timeout`` caps the whole wait; ``idle`` (if given) fails sooner when the guest prints
        nothing for that long — it resets on every byte.  Fail-fast patterns (the console's and
        ``fail``) raise at once.  ``fresh`` drains stale output first.
        """
        m = self._wait(patterns, timeout=timeout, idle=idle, fail=fail, fresh=fresh, what=what, eof_ok=False)
        assert m is not None
        return m

    def wait_closed(self, *, timeout: float, idle: float | None = None, fail: Sequence[Pattern] = (),
                    what: str = "QEMU to exit") -> None:
        """Wait until the console closes (QEMU exited, e.g. ``-no-reboot`` after an install finished),
        failing fast on fail patterns and on silence longer than ``idle``."""
        self._wait((), timeout=timeout, idle=idle, fail=fail, fresh=False, what=what, eof_ok=True)

    def _wait(self, patterns: Pattern | Sequence[Pattern], *, timeout: float, idle: float | None,
              fail: Sequence[Pattern], fresh: bool, what: str | None, eof_ok: bool) -> re.Match[str] | None:
        c = self._c()
        if fresh:
            self.drain()
        pats = [patterns] if isinstance(patterns, str | re.Pattern) else list(patterns)
        want = [re.compile(p) if isinstance(p, str) else p for p in pats]
        bad = self.fail_patterns + [re.compile(p) if isinstance(p, str) else p for p in fail]
        compiled: list[re.Pattern[str] | type[pexpect.EOF]] = [*want, *bad]
        if eof_ok:
            compiled.append(pexpect.EOF)
        label = what or " | ".join(p.pattern for p in want)
        start = time.monotonic()
        self.tap.last_rx = start
        while True:
            now = time.monotonic()
            left = timeout - (now - start)
            if idle is not None:
                left = min(left, idle - (now - self.tap.last_rx))
            if left <= 0:
                silent = now - self.tap.last_rx
                why = (f"no output for {silent:.0f}s" if idle is not None and silent >= idle
                       else f"not seen within {timeout:.0f}s")
                raise ConsoleError(f"console: waiting for {label!r}: {why}", self._tname(), self.tap.lines())
            try:
                i = c.expect_list(compiled, timeout=min(left, 1.0), searchwindowsize=None)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise ConsoleError(f"console: closed while waiting for {label!r} (QEMU exited?)",
                                   self._tname(), self.tap.lines()) from None
            if eof_ok and i == len(compiled) - 1:
                return None
            m = c.match
            assert isinstance(m, re.Match)
            if i >= len(want):
                raise ConsoleError(f"console: fail pattern {m.re.pattern!r} seen while waiting for {label!r}",
                                   self._tname(), self.tap.lines())
            return m

    def _tname(self) -> str | None:
        return str(self.transcript) if self.transcript else None

    # -- input ------------------------------------------------------------------------------
    def send(self, text: str, *, slow: bool | None = None, drain: bool = True) -> None:
        """Type ``text`` (after draining stale output); one character at a time if slow."""
        c = self._c()
        if drain:
            self.drain(settle=0.02)
        if self._typed is not None:
            self._typed.write(f"[{time.strftime('%H:%M:%S')}] {text!r}\n")
            self._typed.flush()
        delay = self.char_delay if slow is None else (self.char_delay or 0.02 if slow else 0.0)
        if delay > 0:
            for ch in text:
                c.send(ch)
                time.sleep(delay)
        else:
            c.send(text)

    def sendline(self, text: str = "", **kw: object) -> None:
        self.send(text + "\r", **kw)  # type: ignore[arg-type]

    # -- shell helper ---------------------------------------------------------------------------
    def init_shell(self, *, timeout: float = 30.0, setup: Sequence[str] = ()) -> str:
        """Give the shell on the console a unique prompt and wait for it; returns the prompt.

        The prompt is assembled from two quoted halves so the echo of the command that sets it
        cannot match it.  ``setup`` runs first (e.g. ``dmesg -n 1`` to keep kernel messages out of
        command output).
        """
        tag = secrets.token_hex(4)
        prompt = f"mlp-{tag}# "
        for cmd in setup:
            self.sendline(cmd)
        self.sendline(f"PS1='mlp-''{tag}# '; PS2=''; export PS1 PS2")
        self.expect(re.escape(prompt), timeout=timeout, what="the shell prompt")
        self.prompt = prompt
        return prompt

    def run(self, command: str, *, timeout: float = 60.0, idle: float | None = None) -> tuple[int, str]:
        """Run ``command`` in the console's shell; (exit status, output with \\n line ends).

        Markers printed by ``printf`` around the command delimit its output; they are typed in
        split form so their own echo never matches.
        """
        if self.prompt is None:
            self.init_shell(timeout=timeout)
        tag = secrets.token_hex(5)
        cmd = command.strip().rstrip(";")
        self.sendline(f"printf '%s_%s\\n' MLB {tag}; {{ {cmd} ; }}; printf '%s_%s_%d\\n' MLE {tag} $?")
        self.expect(rf"MLB_{tag}\r?\n", timeout=timeout, idle=idle, what=f"start of {cmd!r}")
        m = self.expect(rf"MLE_{tag}_(\d+)\r?\n", timeout=timeout, idle=idle, what=f"end of {cmd!r}")
        out = (self._c().before or "").replace("\r\n", "\n").replace("\r", "")
        assert self.prompt is not None
        self.expect(re.escape(self.prompt), timeout=timeout, what="the shell prompt")
        return int(m.group(1)), out.rstrip("\n")

    # -- interactive ------------------------------------------------------------------------------
    def interact(self, escape: bytes = b"\x1d") -> None:
        """Hand the console to the user's terminal until ``escape`` (Ctrl-]) is typed."""
        c = self._c()
        sock = self.sock
        assert sock is not None
        pending = c.buffer
        c.buffer = ""
        if pending:
            sys.stdout.write(pending)
            sys.stdout.flush()
        fd_in = sys.stdin.fileno()
        old = termios.tcgetattr(fd_in) if os.isatty(fd_in) else None
        try:
            if old is not None:
                tty.setraw(fd_in)
            while True:
                r, _, _ = select.select([fd_in, sock], [], [])
                if sock in r:
                    data = sock.recv(65536)
                    if not data:
                        break
                    os.write(sys.stdout.fileno(), data)
                if fd_in in r:
                    data = os.read(fd_in, 1024)
                    if not data or escape in data:
                        break
                    sock.sendall(data)
        finally:
            if old is not None:
                termios.tcsetattr(fd_in, termios.TCSADRAIN, old)
