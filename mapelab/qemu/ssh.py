"""SSH into guests with paramiko: one ed25519 key per cache, host keys pinned, no passwords.

Why pinned: the guest's host key is created at its first boot; we pin it then (preferably from
the serial console, which is out of band, else on first connect) and every later connection
must present the same key — a different key is an error, never a silent re-trust.  Keys live in
the machine's run directory, so a new overlay (a new guest) gets its own pin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import cache
from .errors import HostKeyMismatch, SshError
from .locks import Lock

OutputFn = Callable[[str], None]

# paramiko logs every refused connection attempt with a traceback; while a guest boots those are
# expected, and our errors say what matters.  A handler here keeps them off stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def cache_key(root: Path | None = None) -> Path:
    """The cache's SSH private key (OpenSSH format), created on first use; ``.pub`` beside it."""
    d = cache.sub("ssh", root)
    key = d / "id_ed25519"
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    with Lock("ssh-key", purpose="creating the cache SSH key", root=root):
        if key.exists() and key.with_suffix(".pub").exists():
            return key
        priv = Ed25519PrivateKey.generate()
        pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption())
        pub = priv.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        cache.atomic_write(key, pem, mode=0o600)
        cache.atomic_write(key.with_suffix(".pub"), pub + b" mapelab-cache\n", mode=0o644)
    return key


def public_key_line(root: Path | None = None) -> str:
    """``ssh-ed25519 AAAA… mapelab-cache``: what goes into a guest's authorized_keys."""
    return cache_key(root).with_suffix(".pub").read_text().strip()


class HostKeyPin:
    """A pinned host key in a file (``<type> <base64>``); empty until the first boot pins it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def get(self) -> str | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return " ".join(text.split()[:2]) or None

    def pin(self, key_line: str) -> None:
        """Pin ``key_line`` (``type base64 [comment]``); pinning a different key than the pinned one fails."""
        parts = key_line.split()
        if len(parts) < 2:
            raise SshError(f"host key {key_line!r}: expected '<type> <base64>'")
        line = f"{parts[0]} {parts[1]}"
        old = self.get()
        if old is not None and old != line:
            raise HostKeyMismatch(
                f"host key changed: pinned {old[:40]}… in {self.path}, guest now says {line[:40]}…; if the "
                f"guest was really rebuilt, delete {self.path} (or the run: invoke vm.prune) and boot again"
            )
        cache.atomic_write(self.path, line + "\n", mode=0o600)


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """Compare the server's key with the pin; pin on first use if nothing is pinned yet."""

    def __init__(self, pin: HostKeyPin, trust_first: bool) -> None:
        self.pin = pin
        self.trust_first = trust_first

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{key.get_name()} {key.get_base64()}"
        pinned = self.pin.get()
        if pinned is None:
            if not self.trust_first:
                raise SshError(f"{hostname}: no pinned host key in {self.pin.path} and first-use trust is off")
            self.pin.pin(line)
            return
        if pinned != line:
            raise HostKeyMismatch(
                f"{hostname}: host key changed (pinned in {self.pin.path}: {pinned[:40]}…, offered "
                f"{line[:40]}…); refusing to connect. If the guest was rebuilt on purpose, delete the pin"
            )


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class Ssh:
    """One SSH connection to a guest (usually 127.0.0.1 and a forwarded port)."""

    def __init__(self, host: str, port: int, *, pin: HostKeyPin, user: str = "root", key: Path | None = None,
                 trust_first: bool = True) -> None:
        self.host, self.port, self.user = host, port, user
        self.key_path = key or cache_key()
        self.pin = pin
        self.trust_first = trust_first
        self.client: paramiko.SSHClient | None = None

    def connect(self, timeout: float = 10.0) -> Ssh:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(_PinPolicy(self.pin, self.trust_first))
        try:
            c.connect(self.host, self.port, username=self.user,
                      pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key_path)),
                      look_for_keys=False, allow_agent=False, timeout=timeout,
                      banner_timeout=timeout, auth_timeout=timeout)
        except (HostKeyMismatch, SshError):
            c.close()
            raise
        except paramiko.AuthenticationException as e:
            c.close()
            raise SshError(f"ssh {self.user}@{self.host}:{self.port}: key {self.key_path} refused ({e}); the guest "
                           f"was built with another cache's key: rebuild it from this cache") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            c.close()
            raise SshError(f"ssh {self.user}@{self.host}:{self.port}: {e}") from None
        self.client = c
        return self

    def wait_ready(self, timeout: float, interval: float = 1.0) -> Ssh:
        """Connect, retrying until ``timeout`` while sshd is not up yet; a changed host key fails at once."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.connect(timeout=min(15.0, max(2.0, deadline - time.monotonic())))
            except HostKeyMismatch:
                raise
            except SshError as e:
                if "refused (" in str(e) and "key" in str(e):
                    raise
                last = e
                time.sleep(interval)
        raise SshError(f"ssh {self.host}:{self.port}: guest did not answer within {timeout:.0f}s (last: {last})")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> Ssh:
        return self if self.client else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _c(self) -> paramiko.SSHClient:
        if self.client is None:
            raise SshError(f"ssh {self.host}:{self.port}: not connected")
        return self.client

    def run(self, command: str, *, timeout: float = 300.0, check: bool = False, stdin: str | bytes | None = None,
            on_stdout: OutputFn | None = None, on_stderr: OutputFn | None = None) -> Result:
        """Run ``command``; stream output to the callbacks as it arrives; return status and output.

        ``timeout`` is the whole command's limit; ``check`` raises on a non-zero status.
        """
        transport = self._c().get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"ssh {self.host}:{self.port}: connection is closed")
        chan = transport.open_session()
        chan.settimeout(1.0)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
        chan.shutdown_write()
        out: list[str] = []
        err: list[str] = []
        deadline = time.monotonic() + timeout
        dec_o, dec_e = _Decoder(), _Decoder()
        try:
            while True:
                got = False
                if chan.recv_ready():
                    s = dec_o.feed(chan.recv(65536))
                    out.append(s)
                    got = True
                    if on_stdout and s:
                        on_stdout(s)
                if chan.recv_stderr_ready():
                    s = dec_e.feed(chan.recv_stderr(65536))
                    err.append(s)
                    got = True
                    if on_stderr and s:
                        on_stderr(s)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise SshError(f"ssh {self.host}:{self.port}: {command!r} still running after {timeout:.0f}s")
                if not got:
                    time.sleep(0.02)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        res = Result(status, "".join(out), "".join(err))
        if check and status != 0:
            raise SshError(f"guest command {command!r} exited {status}: {res.stderr.strip()[-500:]}")
        return res

    def _sftp(self) -> paramiko.SFTPClient:
        return self._c().open_sftp()

    def put(self, local: Path, remote: str, *, keep_mtime: bool = True) -> None:
        """Upload a file, keeping its mtime and mode (builds inside the guest rely on mtimes)."""
        local = Path(local)
        st = local.stat()
        with self._sftp() as sftp:
            tmp = f"{remote}.mlup{os.getpid()}"
            sftp.put(str(local), tmp)
            sftp.chmod(tmp, stat.S_IMODE(st.st_mode))
            if keep_mtime:
                sftp.utime(tmp, (st.st_atime, st.st_mtime))
            with contextlib.suppress(OSError):
                sftp.remove(remote)
            sftp.rename(tmp, remote)

    def put_tree(self, local_dir: Path, remote_dir: str, *, exclude: tuple[str, ...] = ("__pycache__", ".git"),
                 timeout: float = 1800.0) -> None:
        """Copy a directory tree into ``remote_dir`` as one tar stream, keeping mtimes and modes.

        One stream instead of a file-by-file SFTP walk: a source tree has tens of thousands of
        files.  Needs only ``tar`` in the guest (OpenBSD's and GNU's both read ``-xpf - -C``).
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise SshError(f"put_tree: {local_dir} is not a directory")
        transport = self._c().get_transport()
        if transport is None:
            raise SshError(f"ssh {self.host}:{self.port}: connection is closed")
        chan = transport.open_session()
        chan.settimeout(timeout)
        q = shlex.quote(remote_dir)
        chan.exec_command(f"mkdir -p {q} && tar -xpf - -C {q}")
        with chan.makefile("wb") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.add(str(local_dir), arcname=".", filter=_tar_filter(exclude))
        chan.shutdown_write()
        status = chan.recv_exit_status()
        err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
        chan.close()
        if status != 0:
            raise SshError(f"put_tree {local_dir} -> {remote_dir}: guest tar exited {status}: {err[-300:]}")

    def get(self, remote: str, local: Path, *, keep_mtime: bool = True) -> None:
        """Download a file to a temporary name, then rename, keeping its mtime."""
        local = Path(local)
        tmp = local.with_name(f".{local.name}.mldl{os.getpid()}")
        with self._sftp() as sftp:
            st = sftp.stat(remote)
            sftp.get(remote, str(tmp))
        if keep_mtime and st.st_mtime is not None:
            os.utime(tmp, (st.st_atime or st.st_mtime, st.st_mtime))
        os.replace(tmp, local)


def _tar_filter(exclude: tuple[str, ...]) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    def f(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(part in exclude for part in Path(ti.name).parts):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    return f


class _Decoder:
    """Incremental UTF-8 decoding so a multi-byte character split across reads is not mangled."""

    def __init__(self) -> None:
        import codecs

        self.d = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self.d.decode(data)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False
