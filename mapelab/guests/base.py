"""What every guest shares: boot a sealed image on a fresh overlay, pin its host key, reach it by SSH.

Why one flow: the CI Linux guest, the OpenBSD build guest and the OpenBSD CE all boot the same
way — a per-run qcow2 overlay (or, for a layer build, the layer's own disk) under QEMU, the
guest printing ``MAPELAB-HOSTKEY <type> <base64>`` on its serial console at boot, mapelab
pinning that key before the first SSH connection, then SSH on a port QEMU forwarded to
127.0.0.1.  Only a few things differ by operating system — what a failed boot looks like on
the console, how to list NICs with their MACs, how to power off — and those are a
:class:`GuestOs`, which each guest module defines once (``mapelab.guests.linux.LINUX``,
``mapelab.guests.openbsd.OPENBSD``).

Evidence: the machine's run directory keeps ``console-N.log`` (every boot's serial transcript),
``qemu.stderr``, ``machine.json`` and the pinned ``host_key.pub``; a failed boot always keeps it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mapelab.qemu import accel as accel_mod
from mapelab.qemu import images
from mapelab.qemu.console import SerialConsole
from mapelab.qemu.errors import ConsoleError, QemuError
from mapelab.qemu.machine import Machine, runs_dir, unique_name
from mapelab.qemu.spec import Disk, KernelBoot, MachineSpec, TapNic, UserNic
from mapelab.qemu.ssh import HostKeyPin, Result, Ssh

Progress = Callable[[str], None]
#: the line every mapelab guest prints on its serial console at boot; the newline: never match half a key
HOSTKEY_RE = r"MAPELAB-HOSTKEY (ssh-ed25519 [A-Za-z0-9+/=]+)\r?\n"


@dataclass(frozen=True)
class GuestOs:
    """What the shared boot flow needs to know about one guest operating system."""

    name: str
    #: console text that means the boot has failed (a panic, a rescue shell …): fail at once
    fail_patterns: tuple[str, ...]
    #: a command printing every NIC with its MAC, and its parser → {mac (lowercase): interface name}
    links_command: str
    parse_links: Callable[[str], dict[str, str]]
    #: power off cleanly from inside (a build must not lose what it wrote to disk)
    poweroff_command: str
    #: (KVM seconds, TCG seconds) until the host key shows on the console, and until SSH answers after it
    hostkey_timeout: tuple[float, float] = (90, 360)
    hostkey_idle: tuple[float, float] = (45, 180)
    ssh_timeout: tuple[float, float] = (30, 120)
    #: the root shell prompt on the serial console (None: the OS gives no console shell without a login)
    console_prompt: str | None = None
    console_setup: tuple[str, ...] = ()


@dataclass
class Guest:
    """A booted guest: its machine, SSH connection, image and OS; made by :func:`boot`.

    ``timings`` holds seconds from QEMU start to the host key on the console and to SSH ready.
    The console is not held open after boot: an unread console socket would fill and stall the
    guest's console writes, and QEMU serves one console client at a time (``invoke vm.console``
    must be able to attach).  :meth:`console_shell` connects it again; :meth:`release_console`
    lets go.
    """

    machine: Machine
    ssh: Ssh
    image: images.Image
    os: GuestOs
    taps: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    console: SerialConsole | None = None

    @property
    def name(self) -> str:
        return self.machine.spec.name

    def run(self, command: str, **kw: object) -> Result:
        """Run a command over SSH (see :meth:`mapelab.qemu.ssh.Ssh.run`)."""
        return self.ssh.run(command, **kw)  # type: ignore[arg-type]

    def tap_macs(self) -> dict[str, str]:
        """TAP name → the MAC of the guest NIC attached to it."""
        return {n: mac for n, mac in self.machine.spec.nic_macs() if n in self.taps}

    def iface_for_tap(self, tap: str) -> str:
        """The guest's interface name for the NIC on host TAP ``tap`` (found by MAC, never by order)."""
        mac = self.tap_macs().get(tap)
        if mac is None:
            raise QemuError(f"TAP {tap!r} is not attached to {self.name} (attached: {', '.join(self.taps) or 'none'})")
        res = self.ssh.run(self.os.links_command, check=True)
        found = self.os.parse_links(res.stdout)
        if mac.lower() not in found:
            raise QemuError(f"no {self.os.name} interface of {self.name} has MAC {mac} (TAP {tap}); "
                            f"`{self.os.links_command}` says:\n{res.stdout}")
        return found[mac.lower()]

    def console_shell(self, timeout: float | None = None) -> SerialConsole:
        """The serial console with a root shell behind a unique prompt (the guest logs root in there)."""
        if self.os.console_prompt is None:
            raise QemuError(f"{self.os.name} guests give no root shell on the serial console; use SSH")
        if self.console is None:
            self.console = SerialConsole(self.machine.serial_path, transcript=self.machine.transcript,
                                         fail_patterns=self.os.fail_patterns,
                                         connect_timeout=self.machine.accel.timeout(10)).connect()
        if self.console.prompt is None:
            t = timeout or self.machine.accel.timeout(30, 120)
            self.console.sendline("")
            self.console.expect(self.os.console_prompt, timeout=t, what="the root shell on the serial console")
            self.console.init_shell(timeout=t, setup=list(self.os.console_setup))
        return self.console

    def release_console(self) -> None:
        """Disconnect from the serial console (QEMU keeps logging it to the transcript)."""
        if self.console is not None:
            self.console.close()
            self.console = None

    def poweroff(self, timeout: float | None = None) -> None:
        """Shut the guest down from inside and wait until QEMU has exited (disks flushed by the guest)."""
        t = timeout or self.machine.accel.timeout(120, 480)
        with contextlib.suppress(QemuError):  # the connection drops as the guest goes down
            self.ssh.run(self.os.poweroff_command, timeout=30)
        self.ssh.close()
        if self.machine.wait(t) is None:
            raise QemuError(f"{self.name} did not power off within {t:.0f}s after `{self.os.poweroff_command}`; "
                            f"see {self.machine.transcript}")


def parse_ip_link(text: str) -> dict[str, str]:
    """``ip -o link show`` → {mac: ifname} (Linux)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\d+: ([^:@]+)[:@].*link/ether ([0-9a-f:]{17})", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


@contextlib.contextmanager
def boot(
    image: images.Image,
    os: GuestOs,
    *,
    name: str | None = None,
    disk: Path | None = None,
    taps: Sequence[str | TapNic] = (),
    accel: str | accel_mod.Accel | None = None,
    probe_kernel: Path | None = None,
    kernel: KernelBoot | None = None,
    mgmt_mac: str | None = None,
    cpus: int = 2,
    memory_mb: int = 1024,
    root: Path | None = None,
    progress: Progress | None = None,
    keep_run: bool = False,
    detach: bool = False,
) -> Iterator[Guest]:
    """Boot ``image`` (on a fresh overlay, or on ``disk`` when a layer build gives its own), wait for
    the host key and SSH, yield the :class:`Guest`; stop QEMU on the way out.

    ``taps`` are existing TAP devices (a testbed slot's ``wan_tap`` and ``lan_tap``), attached in
    that order after the management NIC; pass a :class:`TapNic` to set more (``host_mtu``).
    ``keep_run`` keeps the run directory after a clean stop (a failed boot always keeps it);
    ``detach`` leaves the guest running after a clean exit from the block (``invoke vm.stop`` ends it).
    A guest that was powered off from inside (:meth:`Guest.poweroff`) is simply collected.
    """
    say = progress or (lambda _m: None)
    acc = accel if isinstance(accel, accel_mod.Accel) else accel_mod.choose(accel, root=root, kernel=probe_kernel)
    name = name or unique_name(os.name)
    run_dir = runs_dir(root) / name
    tap_nics = tuple(t if isinstance(t, TapNic) else TapNic(t) for t in taps)
    tap_nics = tuple(TapNic(t.ifname, id=t.id or f"tap{i}", mac=t.mac, model=t.model, host_mtu=t.host_mtu)
                     for i, t in enumerate(tap_nics))
    own_overlay = disk is None
    target = run_dir / "disk.qcow2" if own_overlay else Path(disk).absolute()  # type: ignore[arg-type]
    spec = MachineSpec(
        name=name, accel=acc.name, cpus=cpus, memory_mb=memory_mb, disks=(Disk(target),),
        nics=(UserNic(mac=mgmt_mac or image.meta.get("mgmt_mac")), *tap_nics), kernel=kernel, no_reboot=True,
    )
    spec.validate()
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ok = False
    why = "stopped"
    with images.using(image, f"machine {name}"):
        if own_overlay and not target.exists():
            images.create_overlay(image, target, owner=f"machine {name}")
        m = Machine(spec, accel=acc, run_dir=run_dir, root=root, detach=detach)
        con: SerialConsole | None = None
        ssh: Ssh | None = None
        guest: Guest | None = None
        try:
            t0 = time.monotonic()
            say(f"booting {name} ({os.name}, {acc.name}, {cpus} vCPU, {memory_mb} MiB; transcript {m.transcript.parent}"
                f"/console-N.log)")
            m.start()
            con = SerialConsole(m.serial_path, transcript=m.transcript, fail_patterns=os.fail_patterns,
                                connect_timeout=acc.timeout(10)).connect()
            pin = HostKeyPin(run_dir / "host_key.pub")
            try:
                hk = con.expect(HOSTKEY_RE, timeout=acc.timeout(*os.hostkey_timeout),
                                idle=acc.timeout(*os.hostkey_idle),
                                what="the guest's host key announcement (MAPELAB-HOSTKEY)")
            except ConsoleError:
                if not m.running():
                    m.wait(1)
                    raise ConsoleError(f"QEMU exited during boot ({m.exit_reason}, status {m.exit_status})",
                                       str(m.transcript), con.tap.lines()) from None
                raise
            pin.pin(hk.group(1))
            t_key = time.monotonic() - t0
            # Let go of the console before waiting for SSH (see Guest): connected but unread, its
            # socket can push back on the guest's serial port and stall the guest's console writes.
            con.close()
            con = None
            port = m.ssh_port()
            ssh = Ssh("127.0.0.1", port, pin=pin, trust_first=False).wait_ready(acc.timeout(*os.ssh_timeout))
            guest = Guest(m, ssh, image, os, tuple(t.ifname for t in tap_nics),
                          {"host_key_seen": round(t_key, 1), "ssh_ready": round(time.monotonic() - t0, 1)})
            say(f"{name} answers SSH on 127.0.0.1:{port} after {guest.timings['ssh_ready']:.1f}s")
            yield guest
            ok = True
        except KeyboardInterrupt:
            why = "interrupted (Ctrl-C or SIGTERM)"
            raise
        except BaseException as e:
            why = f"failed ({type(e).__name__})"
            raise
        finally:
            if ssh is not None:
                ssh.close()
            if con is not None:
                con.close()
            if guest is not None:
                guest.release_console()
            if ok and detach:
                m.release_detached()
            else:
                m.stop(reason=why)
            if ok and not keep_run and not detach:
                shutil.rmtree(run_dir, ignore_errors=True)
                if own_overlay:
                    image.overlays()  # drop the registration of the removed overlay
