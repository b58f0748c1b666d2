"""The port set of RFC 7597 §5.1: which transport ports a CE may use.

A port is split into three fields, ``A`` (the first ``a`` bits, the PSID offset), the PSID
(``k`` bits) and ``j`` (the last ``m = 16 - a - k`` bits)::

    port = A * 2**(16 - a) + PSID * 2**m + j

With ``a > 0`` the value ``A = 0`` is excluded, so the system ports (0 … 2**(16-a) - 1)
are never handed out; with ``a = 0`` there is one contiguous range and port 0 is still
excluded.  ``k = 0`` means no sharing: the whole port space 1 … 65535 belongs to the CE.

Everything that names ports — pf's ``map-e-portset``, the nftables NAT map, the e2e
assertions — is rendered from this one class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import MapeParameterError

PORT_MAX = 0xFFFF


@dataclass(frozen=True)
class PortSet:
    """The ports of one PSID under a PSID offset ``offset`` (a) and PSID length ``psid_len`` (k)."""

    offset: int
    psid_len: int
    psid: int
    _m: int = field(init=False, repr=False, compare=False)
    _kmask: int = field(init=False, repr=False, compare=False)
    _ashift: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= 15:
            raise MapeParameterError("psid-offset", self.offset, "0..15", "RFC 7598 §4.5")
        if not 0 <= self.psid_len <= 16 - self.offset:
            raise MapeParameterError(
                "psid-len", self.psid_len, f"0..{16 - self.offset}", f"psid-offset is {self.offset}"
            )
        if not 0 <= self.psid < (1 << self.psid_len):
            raise MapeParameterError(
                "psid", self.psid, f"0..{(1 << self.psid_len) - 1}", f"psid-len is {self.psid_len}"
            )
        object.__setattr__(self, "_m", 16 - self.offset - self.psid_len)
        object.__setattr__(self, "_kmask", (1 << self.psid_len) - 1)
        object.__setattr__(self, "_ashift", 16 - self.offset)

    # -- the set ---------------------------------------------------------------------------

    @property
    def restricted(self) -> bool:
        """False when k = 0: the CE owns every port and NAT needs no port restriction."""
        return self.psid_len > 0

    @property
    def m(self) -> int:
        """Bits of the contiguous part ``j``; each range holds ``2**m`` ports."""
        return self._m

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int) or not 0 < port <= PORT_MAX:
            return False
        if not self.psid_len:
            return True
        if (port >> self._m) & self._kmask != self.psid:
            return False
        return self.offset == 0 or (port >> self._ashift) != 0

    def ranges(self) -> list[tuple[int, int]]:
        """Inclusive ``(first, last)`` ranges in ascending order."""
        if not self.restricted:
            return [(1, PORT_MAX)]
        width = 1 << self._m
        out = []
        first_a = 1 if self.offset > 0 else 0
        for a_value in range(first_a, 1 << self.offset):
            first = (a_value << self._ashift) | (self.psid << self._m)
            last = first + width - 1
            if first == 0:
                first = 1
                if last < first:
                    continue
            out.append((first, last))
        return out

    def __len__(self) -> int:
        if not self.restricted:
            return PORT_MAX
        width = 1 << self._m
        if self.offset > 0:
            return ((1 << self.offset) - 1) * width
        return width - (1 if self.psid == 0 else 0)

    @property
    def size(self) -> int:
        return len(self)

    def __iter__(self) -> Iterator[int]:
        for first, last in self.ranges():
            yield from range(first, last + 1)

    # -- renderings --------------------------------------------------------------------------

    def pf(self) -> str | None:
        """pf's ``map-e-portset offset/psid-len/psid`` argument, or None when no restriction applies."""
        if not self.restricted:
            return None
        return f"{self.offset}/{self.psid_len}/{self.psid}"

    def nft_intervals(self) -> list[str]:
        """The ranges as nftables interval elements (``1232-1235``; a single port stays bare)."""
        return [str(a) if a == b else f"{a}-{b}" for a, b in self.ranges()]

    def describe(self) -> str:
        """One line for people: what a router admin checks against the ISP's sheet."""
        if not self.restricted:
            return "all ports 1-65535 (no sharing, k = 0)"
        r = self.ranges()
        shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in r[:3])
        if len(r) > 4:
            shown += f", …, {r[-1][0]}-{r[-1][1]}" if r[-1][0] != r[-1][1] else f", …, {r[-1][0]}"
        elif len(r) == 4:
            a, b = r[3]
            shown += f", {a}-{b}" if a != b else f", {a}"
        head = f"PSID {self.psid} (0x{self.psid:x}) of {1 << self.psid_len}, offset {self.offset}: "
        if not r:
            return head + "no usable port (its only port is 0, which is never used)"
        return head + f"{_count(len(r), 'range')} of {_count(1 << self._m, 'port')} = {len(self)} usable: {shown}"


def _count(n: int, noun: str) -> str:
    """``1 range``, ``63 ranges``: output people read gets its plurals right."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


UNRESTRICTED = PortSet(offset=0, psid_len=0, psid=0)
