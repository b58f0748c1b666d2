"""A TUN device for IPv4 packets, opened with ioctls only (no ``ip`` subprocess on the start path).

The device is created non-persistent in the caller's current network namespace: it disappears
when the returned file descriptor is closed (or the process dies), so a killed BR or CE never
leaves an interface behind.  ``IFF_NO_PI`` means every ``read``/``write`` is exactly one IP
packet, with no 4-byte packet-information prefix to strip.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IFNAMSIZ = 16


class TunError(OSError):
    """The TUN device could not be created or configured; the message says which step and why."""


def _ifreq(name: bytes, fmt: str = "", *values: int) -> bytes:
    data = struct.pack(fmt, *values) if fmt else b""
    return struct.pack(f"{IFNAMSIZ}s", name) + data.ljust(24, b"\0")


def open_tun(name: str, mtu: int | None = None, *, ipv6: bool = True) -> int:
    """Create TUN ``name`` (IPv4/IPv6 packets, no PI header), set its MTU, bring it up.

    ``ipv6=False`` disables IPv6 on the device *before* it comes up, so the kernel never sends
    router solicitations or MLD reports into an IPv4-only datapath.

    Returns the (blocking) file descriptor; closing it removes the device.  Raises
    :class:`TunError` naming the failed step: a name that is too long or already taken
    is the usual cause, and the error says so.
    """
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ:
        raise TunError(f"TUN name {name!r}: must be 1..{IFNAMSIZ - 1} bytes")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise TunError(e.errno, f"cannot open /dev/net/tun: {e.strerror} (needs root and the tun module)") from None
    try:
        try:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(raw, "H", IFF_TUN | IFF_NO_PI))
        except OSError as e:
            raise TunError(
                e.errno, f"TUNSETIFF {name}: {e.strerror} (does an interface of that name already exist?)"
            ) from None
        if not ipv6:
            try:
                with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                    f.write("1\n")
            except OSError as e:
                raise TunError(e.errno, f"disable IPv6 on {name}: {e.strerror}") from None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if mtu is not None:
                try:
                    fcntl.ioctl(s, SIOCSIFMTU, _ifreq(raw, "i", mtu))
                except OSError as e:
                    raise TunError(e.errno, f"set MTU {mtu} on {name}: {e.strerror}") from None
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(raw)), IFNAMSIZ)[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(raw, "H", flags | IFF_UP))
    except BaseException:
        os.close(fd)
        raise
    return fd
