"""Machine spec → QEMU argv: what the OpenBSD installer and the Linux guest rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapelab.qemu.spec import Disk, KernelBoot, MachineSpec, TapNic, UserNic, mac_for

SOCKS = {"qmp_socket": Path("/r/qmp.sock"), "serial_socket": Path("/r/serial.sock"), "serial_log": Path("/r/c-1.log")}


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_defaults_render_the_reference_flags() -> None:
    argv = MachineSpec("m1", accel="tcg", cpus=4, memory_mb=4096).argv(**SOCKS)
    assert argv[0] == "qemu-system-x86_64"
    assert "-nodefaults" in argv and _pairs(argv, "-display") == ["none"]
    assert _pairs(argv, "-machine") == ["q35,accel=tcg"]
    assert _pairs(argv, "-cpu") == ["max"]
    assert _pairs(argv, "-smp") == ["4,sockets=1,cores=4,threads=1"]  # OpenBSD disables SMT
    assert _pairs(argv, "-m") == ["4096"]
    assert _pairs(argv, "-rtc") == ["base=utc,clock=host"]
    chardevs = _pairs(argv, "-chardev")
    assert "socket,id=qmp,path=/r/qmp.sock,server=on,wait=off" in chardevs
    assert any(c.startswith("socket,id=serial0,path=/r/serial.sock,server=on,wait=off,logfile=/r/c-1.log")
               for c in chardevs)
    assert _pairs(argv, "-serial") == ["chardev:serial0"]
    assert _pairs(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert "-no-reboot" not in argv
    # the management NIC: user networking, IPv6 off, SSH on loopback with a host-chosen port
    assert _pairs(argv, "-netdev") == ["user,id=mgmt,ipv6=off,hostfwd=tcp:127.0.0.1:0-:22"]
    assert "mapelab-m1" in _pairs(argv, "-name")[0]


def test_kvm_uses_host_cpu_and_installer_flags() -> None:
    spec = MachineSpec("inst", accel="kvm", no_reboot=True, cdrom=Path("/m/install.iso"), boot_order="d")
    argv = spec.argv(**SOCKS)
    assert _pairs(argv, "-cpu") == ["host"]
    assert "-no-reboot" in argv
    assert _pairs(argv, "-boot") == ["order=d"]
    assert any("media=cdrom" in d and "/m/install.iso" in d for d in _pairs(argv, "-drive"))


def test_disks_and_comma_escaping() -> None:
    spec = MachineSpec("d", disks=(Disk(Path("/a,b/disk.qcow2")), Disk(Path("/x/raw.img"), format="raw",
                                                                           snapshot=True)))
    drives = _pairs(spec.argv(**SOCKS), "-drive")
    assert drives[0].startswith("file=/a,,b/disk.qcow2,format=qcow2,if=virtio,index=0")
    assert "discard=unmap" in drives[0]
    assert "snapshot=on" in drives[1] and "format=raw" in drives[1]
    with pytest.raises(ValueError, match="vmdk"):
        MachineSpec("d", disks=(Disk(Path("/x"), format="vmdk"),)).argv(**SOCKS)


def test_existing_taps_are_attached_by_name_without_scripts() -> None:
    spec = MachineSpec("ce0", nics=(UserNic(), TapNic("mlq1-wan0"), TapNic("mlq1-lan0", mac="52:54:00:00:00:09")))
    argv = spec.argv(**SOCKS)
    netdevs = _pairs(argv, "-netdev")
    assert "tap,id=tap_mlq1_wan0,ifname=mlq1-wan0,script=no,downscript=no" in netdevs
    devices = _pairs(argv, "-device")
    assert f"virtio-net-pci,netdev=tap_mlq1_wan0,mac={mac_for('ce0/mlq1-wan0')}" in devices
    assert "virtio-net-pci,netdev=tap_mlq1_lan0,mac=52:54:00:00:00:09" in devices
    macs = dict(spec.nic_macs())
    assert macs["mlq1-lan0"] == "52:54:00:00:00:09" and set(macs) == {"mgmt", "mlq1-wan0", "mlq1-lan0"}


def test_tap_host_mtu() -> None:
    argv = MachineSpec("m", nics=(TapNic("t0", host_mtu=1460),)).argv(**SOCKS)
    assert any(d.endswith(",host_mtu=1460") for d in _pairs(argv, "-device"))
    with pytest.raises(ValueError, match="host_mtu"):
        MachineSpec("m", nics=(TapNic("t0", model="e1000", host_mtu=1460),)).argv(**SOCKS)


def test_no_ssh_forward_and_kernel_boot() -> None:
    spec = MachineSpec("k", nics=(UserNic(ssh_port=None),), kernel=KernelBoot(Path("/i/vmlinuz"), Path("/i/initrd"),
                                                                              "console=ttyS0 root=/dev/vda"))
    argv = spec.argv(**SOCKS)
    assert _pairs(argv, "-netdev") == ["user,id=mgmt,ipv6=off"]
    assert _pairs(argv, "-kernel") == ["/i/vmlinuz"] and _pairs(argv, "-initrd") == ["/i/initrd"]
    assert _pairs(argv, "-append") == ["console=ttyS0 root=/dev/vda"]


def test_macs_are_stable_and_local() -> None:
    assert mac_for("a/b") == mac_for("a/b") != mac_for("a/c")
    assert mac_for("x").startswith("52:54:00:")


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"name": "bad name"}, "machine name"),
        ({"name": "ok", "accel": "hvf"}, "accelerator"),
        ({"name": "ok", "cpus": 0}, "cpus"),
        ({"name": "ok", "memory_mb": 16}, "memory"),
        ({"name": "ok", "nics": (UserNic(), UserNic())}, "repeat"),
        ({"name": "ok", "nics": (TapNic("way-too-long-tap-name0"),)}, "TAP name"),
    ],
)
def test_bad_specs_name_the_input(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        MachineSpec(**kw).argv(**SOCKS)
