"""The serial console driver against a shell behind a unix socket (no QEMU needed)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapelab.qemu.console import SerialConsole
from mapelab.qemu.errors import ConsoleError


@pytest.fixture
def shell_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket server bridged to an interactive sh on a pty — like a serial getty: it echoes
    what is typed and turns the typed CR into NL, so the driver meets what a guest shows it."""
    path = tmp_path / "serial.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        master, slave = os.openpty()
        procs.append(subprocess.Popen(["sh", "-i"], stdin=slave, stdout=slave, stderr=slave,
                                      start_new_session=True, env={"PATH": os.environ["PATH"], "PS1": "$ "}))
        os.close(slave)
        while not stop.is_set():
            r, _, _ = select.select([conn, master], [], [], 0.2)
            try:
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        break
                    os.write(master, data)
                if master in r:
                    conn.sendall(os.read(master, 4096))
            except OSError:
                break
        conn.close()
        os.close(master)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    stop.set()
    for p in procs:
        p.kill()
        p.wait()
    t.join(5)
    srv.close()


def test_shell_helper_returns_status_and_output(shell_socket: Path, tmp_path: Path) -> None:
    with SerialConsole(shell_socket, transcript=tmp_path / "console-1.log") as con:
        prompt = con.init_shell(timeout=10)
        assert prompt.startswith("mlp-")
        assert con.run("echo hello; echo world") == (0, "hello\nworld")
        assert con.run("false") == (1, "")
        status, out = con.run("ls /nonexistent-mapelab 2>&1")
        assert status != 0 and "nonexistent-mapelab" in out
        assert con.run("printf 'MLE_fake_0\\n'; exit_code=7; (exit $exit_code)")[0] == 7
    typed = (tmp_path / "console-1.typed.log").read_text()
    assert "echo hello" in typed


def test_fail_fast_and_idle_timeout(shell_socket: Path) -> None:
    with SerialConsole(shell_socket, fail_patterns=[r"panic: "], char_delay=0.001) as con:
        con.init_shell(timeout=10)
        con.sendline("echo 'pan''ic: oops'")
        with pytest.raises(ConsoleError, match="fail pattern 'panic: '") as e:
            con.expect("never-printed", timeout=10)
        assert "panic: oops" in e.value.tail
        con.sendline("sleep 5")
        with pytest.raises(ConsoleError, match="no output for"):
            con.expect("never-printed", timeout=30, idle=1)


def test_idle_timeout_resets_on_progress(shell_socket: Path) -> None:
    with SerialConsole(shell_socket) as con:
        con.init_shell(timeout=10)
        con.sendline("for i in 1 2 3 4; do sleep 0.6; echo tick$i; done; echo 'do''ne'")
        m = con.expect("done", timeout=20, idle=1.5)  # 2.4 s in all, never 1.5 s silent
        assert m.group(0) == "done"


def test_drain_keeps_stale_prompts_from_matching(shell_socket: Path) -> None:
    with SerialConsole(shell_socket) as con:
        con.init_shell(timeout=10)
        con.sendline("echo 'old''-marker'")
        con.expect("old-marker", timeout=10)
        con.sendline("echo 'old''-marker'")
        import time

        time.sleep(0.5)
        with pytest.raises(ConsoleError, match="not seen"):
            con.expect("old-marker", timeout=1, fresh=True)


def test_wait_closed_returns_when_the_guest_side_goes_away(shell_socket: Path) -> None:
    with SerialConsole(shell_socket, fail_patterns=[r"Question has no answer"]) as con:
        con.init_shell(timeout=10)
        con.sendline("sleep 0.5; exit")
        con.wait_closed(timeout=10, idle=5)


def test_wait_closed_fails_fast(shell_socket: Path) -> None:
    with SerialConsole(shell_socket, fail_patterns=[r"Question has no answer"]) as con:
        con.init_shell(timeout=10)
        con.sendline("echo 'Question has'' no answer in response file'; sleep 20")
        with pytest.raises(ConsoleError, match="fail pattern"):
            con.wait_closed(timeout=30)
