"""QEMU machines for mapelab: spec → argv, lifecycle via QMP, accelerator probe, serial console,
SSH and layered images.  Nothing here is OpenBSD- or Linux-specific; guests live in
:mod:`mapelab.guests`.

Typical use::

    from mapelab.qemu import accel, Machine, MachineSpec, Disk, UserNic, TapNic
    a = accel.choose()                      # probes KVM once, falls back to TCG loudly
    with Machine(MachineSpec("x", accel=a.name, disks=(Disk(p),)), accel=a) as m:
        port = m.ssh_port()
"""

from .accel import Accel, choose
from .cache import cache_dir
from .console import SerialConsole
from .errors import ConsoleError, HostKeyMismatch, ImageError, LockBusy, MachineError, QemuError, SshError
from .images import Image, image_key
from .locks import Lock
from .machine import Machine, unique_name
from .spec import Disk, KernelBoot, MachineSpec, TapNic, UserNic
from .ssh import HostKeyPin, Ssh

__all__ = [
    "Accel", "ConsoleError", "Disk", "HostKeyMismatch", "HostKeyPin", "Image", "ImageError", "KernelBoot", "Lock",
    "LockBusy", "Machine", "MachineError", "MachineSpec", "QemuError", "SerialConsole", "Ssh", "SshError", "TapNic",
    "UserNic", "cache_dir", "choose", "image_key", "unique_name",
]
