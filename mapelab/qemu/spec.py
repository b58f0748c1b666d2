"""A typed machine spec, rendered to a QEMU command line.

Why typed: the OpenBSD installer, the build guest and the Linux CI guest all need the same few
knobs (CPU, memory, disks, NICs, console, accelerator, -no-reboot, kernel boot); keeping them in
dataclasses makes the argv reproducible, testable without QEMU, and recorded per run.

Conventions (docs/vm.md): ``-nodefaults -display none``; serial on a
unix socket with a logfile (the boot transcript); QMP on a unix socket; management NIC on user
networking with SSH forwarded to 127.0.0.1 on a port the host picks (read back over QMP, never
guessed); testbed NICs as existing TAP devices; ``-smp N,sockets=1,cores=N,threads=1`` because
OpenBSD disables SMT.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

ACCELS = ("kvm", "tcg")
_ID_OK = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_IFNAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _opt(value: str | Path) -> str:
    """Escape a value for QEMU's comma-separated option syntax (a comma is written twice)."""
    return str(value).replace(",", ",,")


def mac_for(seed: str) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, derived from ``seed``.

    Stable so a guest (and a CE backend) can find a NIC by MAC across boots.
    """
    h = hashlib.sha256(seed.encode()).digest()
    return f"52:54:00:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"


@dataclass(frozen=True)
class Disk:
    """A disk image. ``interface`` virtio (vd*/sd* in guests) or ide; ``snapshot`` discards writes."""

    path: Path
    format: str = "qcow2"
    interface: str = "virtio"
    readonly: bool = False
    snapshot: bool = False
    discard: bool = True
    cache: str = "writeback"

    def argv(self, index: int) -> list[str]:
        if self.format not in ("qcow2", "raw"):
            raise ValueError(f"disk {self.path}: format {self.format!r} is not qcow2 or raw")
        if self.interface not in ("virtio", "ide"):
            raise ValueError(f"disk {self.path}: interface {self.interface!r} is not virtio or ide")
        opts = [f"file={_opt(Path(self.path).absolute())}", f"format={self.format}", f"if={self.interface}",
                f"index={index}", f"cache={self.cache}", "media=disk"]
        if self.discard:
            opts.append("discard=unmap")
        if self.readonly:
            opts.append("readonly=on")
        if self.snapshot:
            opts.append("snapshot=on")
        return ["-drive", ",".join(opts)]


@dataclass(frozen=True)
class UserNic:
    """Management NIC on QEMU user networking (guest 10.0.2.15, host 10.0.2.2).

    ``ssh_port`` 0 lets the host choose a free port on 127.0.0.1; the chosen port is read back
    with :meth:`mapelab.qemu.machine.Machine.ssh_port`.  IPv6 is off: it makes installer fetches hang.
    """

    id: str = "mgmt"
    mac: str | None = None
    ssh_port: int | None = 0  # None: no SSH forward
    guest_ssh_port: int = 22
    ipv6: bool = False
    model: str = "virtio-net-pci"

    def argv(self, machine_name: str) -> list[str]:
        _check_id(self.id)
        opts = [f"user,id={self.id}", f"ipv6={'on' if self.ipv6 else 'off'}"]
        if self.ssh_port is not None:
            opts.append(f"hostfwd=tcp:127.0.0.1:{int(self.ssh_port)}-:{int(self.guest_ssh_port)}")
        mac = self.mac or mac_for(f"{machine_name}/{self.id}")
        return ["-netdev", ",".join(opts), "-device", f"{self.model},netdev={self.id},mac={mac}"]


@dataclass(frozen=True)
class TapNic:
    """A testbed NIC: an existing TAP device (created and bridged by the testbed) given by name.

    QEMU attaches with ``script=no,downscript=no``: it must not configure or remove the TAP, the
    testbed owns it.  ``host_mtu`` (virtio only) tells the guest driver the link's MTU, so a WAN
    with a reduced MTU needs no guest-side configuration to match the testbed.
    """

    ifname: str
    id: str = ""
    mac: str | None = None
    model: str = "virtio-net-pci"
    host_mtu: int | None = None

    def argv(self, machine_name: str) -> list[str]:
        if not _IFNAME_OK.match(self.ifname):
            raise ValueError(f"TAP name {self.ifname!r}: 1-15 characters of letters, digits, _ . - (an existing TAP)")
        nid = self.id or f"tap_{re.sub(r'[^A-Za-z0-9_]', '_', self.ifname)}"[:32]
        _check_id(nid)
        mac = self.mac or mac_for(f"{machine_name}/{self.ifname}")
        dev = f"{self.model},netdev={nid},mac={mac}"
        if self.host_mtu is not None:
            if not self.model.startswith("virtio-net") or not 68 <= self.host_mtu <= 65535:
                raise ValueError(f"TAP {self.ifname}: host_mtu={self.host_mtu} needs a virtio-net model and 68..65535")
            dev += f",host_mtu={self.host_mtu}"
        return ["-netdev", f"tap,id={nid},ifname={self.ifname},script=no,downscript=no", "-device", dev]


Nic = UserNic | TapNic


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot (-kernel/-initrd/-append), as the Linux CI guest uses."""

    kernel: Path
    initrd: Path | None = None
    append: str = ""

    def argv(self) -> list[str]:
        out = ["-kernel", str(Path(self.kernel).absolute())]
        if self.initrd:
            out += ["-initrd", str(Path(self.initrd).absolute())]
        if self.append:
            out += ["-append", self.append]
        return out


@dataclass(frozen=True)
class MachineSpec:
    """Everything that defines one QEMU machine; ``argv`` renders it given the run's sockets."""

    name: str
    accel: str = "tcg"
    cpus: int = 2
    memory_mb: int = 1024
    machine: str = "q35"
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = (UserNic(),)
    kernel: KernelBoot | None = None
    cdrom: Path | None = None
    boot_order: str | None = None  # e.g. "c" (disk) or "d" (cdrom)
    no_reboot: bool = False  # QEMU exits when the guest reboots (installers)
    rng: bool = True
    extra: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", self.name):
            raise ValueError(f"machine name {self.name!r}: use letters, digits, _ . - (max 63), starting alnum")
        if self.accel not in ACCELS:
            raise ValueError(f"accelerator {self.accel!r}: use one of {', '.join(ACCELS)}")
        if not 1 <= self.cpus <= 64:
            raise ValueError(f"cpus={self.cpus}: use 1..64")
        if self.memory_mb < 64:
            raise ValueError(f"memory {self.memory_mb} MB: use at least 64 (OpenBSD wants >= 1024)")
        ids = [n.id for n in self.nics if n.id]
        if len(ids) != len(set(ids)):
            raise ValueError(f"machine {self.name}: NIC ids {ids} repeat; give each NIC its own id")

    def nic_macs(self) -> list[tuple[str, str]]:
        """(NIC id or TAP name, MAC) in PCI order — how a guest-side script finds each NIC."""
        out = []
        for n in self.nics:
            if isinstance(n, UserNic):
                out.append((n.id, n.mac or mac_for(f"{self.name}/{n.id}")))
            else:
                out.append((n.ifname, n.mac or mac_for(f"{self.name}/{n.ifname}")))
        return out

    def argv(
        self,
        *,
        qmp_socket: Path,
        serial_socket: Path,
        serial_log: Path,
        binary: str = "qemu-system-x86_64",
    ) -> list[str]:
        """The full command line. Sockets are QEMU servers that do not wait for a client."""
        self.validate()
        cpu = "host" if self.accel == "kvm" else "max"
        argv = [
            binary,
            "-name", f"mapelab-{self.name},process=mapelab-{self.name}",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", f"{self.machine},accel={self.accel}",
            "-cpu", cpu,
            "-smp", f"{self.cpus},sockets=1,cores={self.cpus},threads=1",
            "-m", str(self.memory_mb),
            "-rtc", "base=utc,clock=host",
            "-chardev", f"socket,id=qmp,path={_opt(qmp_socket)},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"socket,id=serial0,path={_opt(serial_socket)},server=on,wait=off,"
                        f"logfile={_opt(serial_log)},logappend=off",
            "-serial", "chardev:serial0",
        ]
        if self.no_reboot:
            argv.append("-no-reboot")
        if self.rng:
            argv += ["-device", "virtio-rng-pci"]
        for i, d in enumerate(self.disks):
            argv += d.argv(i)
        if self.cdrom:
            argv += ["-drive", f"file={_opt(Path(self.cdrom).absolute())},media=cdrom,readonly=on,if=ide,index=2"]
        if self.boot_order:
            argv += ["-boot", f"order={self.boot_order}"]
        for n in self.nics:
            argv += n.argv(self.name)
        if self.kernel:
            argv += self.kernel.argv()
        argv += list(self.extra)
        return argv


def _check_id(nid: str) -> None:
    if not _ID_OK.match(nid):
        raise ValueError(f"NIC id {nid!r}: start with a letter; letters, digits, _ - only (max 32)")
