"""MAP rules (RFC 7597 §5) and their port parameters (RFC 7598 §4.5).

A :class:`Rule` is what one OPTION_S46_RULE carries: the Rule IPv6 prefix (length n), the
Rule IPv4 prefix (length r), the EA-bits length o, the F flag, and optionally the port
parameters (PSID offset a, an explicit PSID length k and PSID).  The same object is a Basic
Mapping Rule on the CE, a Forwarding Mapping Rule when F is set, and the BR's rule.

Rules are validated when built, so an impossible rule never reaches derivation: the error
names the parameter the way the calculator spells it and the range it must be in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from .errors import MapeParameterError

#: RFC 7597 §5.1: "the default value [of the PSID offset] for MAP-E is 6".
DEFAULT_PSID_OFFSET = 6


@dataclass(frozen=True)
class PortParams:
    """OPTION_S46_PORTPARAMS: PSID offset, PSID length and PSID (a right-aligned integer here).

    ``psid_len == 0`` means "no explicit PSID": the PSID field is ignored (RFC 7598 §4.5) and
    the PSID length comes from the EA bits — what Cosmote sends.
    """

    offset: int = DEFAULT_PSID_OFFSET
    psid_len: int = 0
    psid: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= 15:
            raise MapeParameterError("psid-offset", self.offset, "0..15", "RFC 7598 §4.5")
        if not 0 <= self.psid_len <= 16 - self.offset:
            raise MapeParameterError(
                "psid-len", self.psid_len, f"0..{16 - self.offset}",
                f"psid-offset + psid-len must not exceed 16; psid-offset is {self.offset}",
            )
        if not 0 <= self.psid < (1 << self.psid_len):
            raise MapeParameterError(
                "psid", self.psid, f"0..{(1 << self.psid_len) - 1}",
                f"psid-len is {self.psid_len}" + (" (no explicit PSID)" if not self.psid_len else ""),
            )


@dataclass(frozen=True)
class Rule:
    """One MAP rule.  ``forwarding`` is the F flag; ``reserved_flags`` keeps the other seven
    bits of the flags octet as received, so a decoded option encodes back byte for byte."""

    ipv6_prefix: IPv6Network
    ipv4_prefix: IPv4Network
    ea_len: int
    portparams: PortParams | None = None
    forwarding: bool = False
    reserved_flags: int = 0
    # Integers precomputed once: derivation and the BR's per-packet checks use only these.
    n: int = field(init=False, repr=False, compare=False)
    r: int = field(init=False, repr=False, compare=False)
    v6: int = field(init=False, repr=False, compare=False)
    v4: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ipv6_prefix, IPv6Network):
            raise MapeParameterError("rule-ipv6", self.ipv6_prefix, "an IPv6 prefix such as 2001:db8::/40")
        if not isinstance(self.ipv4_prefix, IPv4Network):
            raise MapeParameterError("rule-ipv4", self.ipv4_prefix, "an IPv4 prefix such as 192.0.2.0/24")
        n, r, o = self.ipv6_prefix.prefixlen, self.ipv4_prefix.prefixlen, self.ea_len
        if not isinstance(o, int) or not 0 <= o <= 48:
            raise MapeParameterError("ea-len", o, "0..48", "RFC 7598 §4.1")
        if r + o > 48:
            raise MapeParameterError(
                "ea-len", o, f"0..{48 - r} with a /{r} rule IPv4 prefix",
                "rule IPv4 length + EA length must not exceed 48: at most 16 PSID bits",
            )
        if n + o > 128:
            raise MapeParameterError(
                "ea-len", o, f"0..{128 - n} with a /{n} rule IPv6 prefix", "the EA bits must fit in 128 bits"
            )
        if not 0 <= self.reserved_flags < 0x80:
            raise MapeParameterError("flags", self.reserved_flags, "0..127 (the seven reserved bits)")
        pp = self.portparams
        if pp is not None and r + o > 32 and pp.psid_len == 0:
            q = r + o - 32
            if pp.offset + q > 16:
                raise MapeParameterError(
                    "psid-offset", pp.offset, f"0..{16 - q}",
                    f"the EA bits give a {q}-bit PSID and offset + PSID length must not exceed 16",
                )
        elif pp is None and r + o - 32 > 16 - DEFAULT_PSID_OFFSET:
            raise MapeParameterError(
                "ea-len", o, f"0..{48 - r - DEFAULT_PSID_OFFSET} without port parameters",
                f"the default PSID offset {DEFAULT_PSID_OFFSET} leaves room for "
                f"{16 - DEFAULT_PSID_OFFSET} PSID bits",
            )
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "v6", int(self.ipv6_prefix.network_address))
        object.__setattr__(self, "v4", int(self.ipv4_prefix.network_address))

    @property
    def psid_offset(self) -> int:
        """a: from the port parameters, else MAP-E's default of 6."""
        return self.portparams.offset if self.portparams is not None else DEFAULT_PSID_OFFSET

    @property
    def ea_psid_len(self) -> int:
        """q = o − p: the PSID bits carried by the EA bits (0 when the CE gets a prefix or full address)."""
        return max(0, self.r + self.ea_len - 32)

    @property
    def explicit_psid(self) -> tuple[int, int] | None:
        """``(k, PSID)`` from option 93 when it carries one (PSID length > 0)."""
        pp = self.portparams
        if pp is None or pp.psid_len == 0:
            return None
        return pp.psid_len, pp.psid

    def matches_ipv6(self, address: int, length: int = 128) -> bool:
        """True when the first n bits of ``address`` (a prefix of ``length`` bits) are the rule's prefix."""
        n = self.n
        return length >= n and (n == 0 or (address >> (128 - n)) == (self.v6 >> (128 - n)))

    def matches_ipv4(self, address: int) -> bool:
        r = self.r
        return r == 0 or (address >> (32 - r)) == (self.v4 >> (32 - r))

    def describe(self) -> str:
        pp = self.portparams
        ports = "no port parameters (offset 6)"
        if pp is not None:
            ports = f"offset {pp.offset}, " + (
                f"explicit PSID {pp.psid}/{pp.psid_len}" if pp.psid_len else "PSID length from EA bits"
            )
        return (
            f"{self.ipv6_prefix} ↔ {self.ipv4_prefix}, EA {self.ea_len}, {ports}"
            + (", F (forwarding)" if self.forwarding else "")
        )


def longest_match_ipv6(rules: tuple[Rule, ...] | list[Rule], address: int, length: int = 128) -> Rule | None:
    """The rule whose IPv6 prefix is the longest match (RFC 7597 §5: selecting the BMR)."""
    best: Rule | None = None
    for rule in rules:
        if rule.matches_ipv6(address, length) and (best is None or rule.n > best.n):
            best = rule
    return best


def longest_match_ipv4(rules: tuple[Rule, ...] | list[Rule], address: int) -> Rule | None:
    """The rule whose IPv4 prefix is the longest match: how a BR or an FMR picks the rule for a destination."""
    best: Rule | None = None
    for rule in rules:
        if rule.matches_ipv4(address) and (best is None or rule.r > best.r):
            best = rule
    return best
