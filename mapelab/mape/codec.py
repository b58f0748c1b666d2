"""RFC 7598 DHCPv6 options for softwire provisioning (codes 89–96): encode and decode.

Every option is ``code(16) length(16) body``.  Containers 94 (MAP-E), 95 (MAP-T) and 96
(Lightweight 4over6) hold rules (89), BRs (90), a DMR (91) or a binding (92); rules and
bindings hold port parameters (93).  Prefixes are truncated to ``ceil(len/8)`` bytes with zero
padding; the PSID is left-aligned in its 16-bit field; F is the least significant flag bit.

The codec is strict: anything that is not what RFC 7598 describes raises :class:`CodecError`
with the byte offset (from the start of the buffer handed in) and the reason.  Two levels:

* ``decode_*`` turn bytes into values, keeping unknown sub-options as :class:`UnknownOption`
  so a capture can be shown and re-encoded byte for byte;
* ``validate_container`` applies RFC 7598 §5's rules for what a container must hold.

Decision on unknown sub-options: RFC 7598 §5 says a client SHOULD discard a container with
unsupported options or invalid values.  mapelab follows the SHOULD: ``validate_container``
rejects such a container (``mape_containers`` reports it as discarded and uses the rest),
which is also what the dhcp6leased patch this project tests does.  Decoding alone never
drops anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .errors import CodecError, MapeParameterError
from .rule import PortParams, Rule

OPTION_S46_RULE = 89
OPTION_S46_BR = 90
OPTION_S46_DMR = 91
OPTION_S46_V4V6BIND = 92
OPTION_S46_PORTPARAMS = 93
OPTION_S46_CONT_MAPE = 94
OPTION_S46_CONT_MAPT = 95
OPTION_S46_CONT_LW = 96
CONTAINERS = {OPTION_S46_CONT_MAPE: "MAP-E", OPTION_S46_CONT_MAPT: "MAP-T", OPTION_S46_CONT_LW: "Lightweight 4over6"}


@dataclass(frozen=True)
class BorderRelay:
    """OPTION_S46_BR."""

    address: IPv6Address


@dataclass(frozen=True)
class DefaultMappingRule:
    """OPTION_S46_DMR (MAP-T)."""

    prefix: IPv6Network


@dataclass(frozen=True)
class V4V6Bind:
    """OPTION_S46_V4V6BIND (Lightweight 4over6)."""

    ipv4: IPv4Address
    ipv6_prefix: IPv6Network
    portparams: PortParams | None = None


@dataclass(frozen=True)
class UnknownOption:
    """A sub-option this codec does not know, kept as received (``offset`` of its header)."""

    code: int
    body: bytes
    offset: int = 0


SubOption = Rule | BorderRelay | DefaultMappingRule | V4V6Bind | UnknownOption


@dataclass(frozen=True)
class Container:
    """One S46 container (94, 95 or 96) with its sub-options in wire order."""

    code: int
    options: tuple[SubOption, ...]
    offset: int = 0

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(o for o in self.options if isinstance(o, Rule))

    @property
    def brs(self) -> tuple[IPv6Address, ...]:
        return tuple(o.address for o in self.options if isinstance(o, BorderRelay))

    @property
    def unknown(self) -> tuple[UnknownOption, ...]:
        return tuple(o for o in self.options if isinstance(o, UnknownOption))


# -- TLV walking -----------------------------------------------------------------------------


def iter_options(data: bytes, base: int = 0) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(code, body, offset_of_header)`` for consecutive options filling ``data`` exactly."""
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise CodecError(base + pos, f"{end - pos} trailing byte(s): an option header needs 4")
        code = int.from_bytes(data[pos : pos + 2], "big")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos + 4 + length > end:
            raise CodecError(
                base + pos, f"option {code} says length {length} but only {end - pos - 4} byte(s) follow"
            )
        yield code, bytes(data[pos + 4 : pos + 4 + length]), base + pos
        pos += 4 + length


def encode_option(code: int, body: bytes) -> bytes:
    """One TLV.  Also the way to build deliberately wrong options for negative tests."""
    if not 0 <= code <= 0xFFFF or len(body) > 0xFFFF:
        raise ValueError(f"option {code} with a {len(body)}-byte body cannot be encoded")
    return code.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


# -- prefixes ----------------------------------------------------------------------------------


def _decode_prefix6(body: bytes, pos: int, base: int, what: str) -> tuple[IPv6Network, int]:
    """Read ``prefix6-len`` and its truncated prefix at ``pos``; return the prefix and the next position."""
    if pos >= len(body):
        raise CodecError(base + pos, f"{what}: missing prefix6-len")
    plen = body[pos]
    if plen > 128:
        raise CodecError(base + pos, f"{what}: prefix6-len {plen} > 128")
    nbytes = (plen + 7) // 8
    raw = body[pos + 1 : pos + 1 + nbytes]
    if len(raw) < nbytes:
        raise CodecError(
            base + pos + 1, f"{what}: a /{plen} prefix needs {nbytes} byte(s), {len(raw)} present"
        )
    value = int.from_bytes(raw.ljust(16, b"\0"), "big")
    host_bits = value & ((1 << (128 - plen)) - 1)
    if host_bits:
        raise CodecError(base + pos + 1, f"{what}: padding bits after /{plen} are not zero")
    return IPv6Network((value, plen)), pos + 1 + nbytes


def _encode_prefix6(prefix: IPv6Network) -> bytes:
    plen = prefix.prefixlen
    return bytes([plen]) + prefix.network_address.packed[: (plen + 7) // 8]


# -- port parameters ---------------------------------------------------------------------------


def decode_portparams(body: bytes, base: int = 0) -> PortParams:
    if len(body) != 4:
        raise CodecError(base, f"OPTION_S46_PORTPARAMS must be 4 bytes, not {len(body)}")
    offset, psid_len = body[0], body[1]
    field = int.from_bytes(body[2:4], "big")
    if offset > 15:
        raise CodecError(base, f"PSID offset {offset} > 15")
    if psid_len > 16:
        raise CodecError(base + 1, f"PSID length {psid_len} > 16")
    if offset + psid_len > 16:
        raise CodecError(base + 1, f"PSID offset {offset} + PSID length {psid_len} > 16")
    if psid_len == 0:
        psid = 0  # "When set to 0, the PSID field is to be ignored."
    else:
        if field & ((1 << (16 - psid_len)) - 1):
            raise CodecError(base + 2, f"PSID field 0x{field:04x}: bits after the first {psid_len} are not zero")
        psid = field >> (16 - psid_len)
    return PortParams(offset=offset, psid_len=psid_len, psid=psid)


def encode_portparams(pp: PortParams) -> bytes:
    field = (pp.psid << (16 - pp.psid_len)) & 0xFFFF if pp.psid_len else 0
    return encode_option(OPTION_S46_PORTPARAMS, bytes([pp.offset, pp.psid_len]) + field.to_bytes(2, "big"))


def _decode_portparams_subopts(data: bytes, base: int, where: str) -> PortParams | None:
    pp: PortParams | None = None
    for code, body, at in iter_options(data, base):
        if code != OPTION_S46_PORTPARAMS:
            raise CodecError(at, f"{where}: sub-option {code} is not allowed (only {OPTION_S46_PORTPARAMS})")
        if pp is not None:
            raise CodecError(at, f"{where}: a second OPTION_S46_PORTPARAMS")
        pp = decode_portparams(body, at + 4)
    return pp


# -- rule, BR, DMR, binding ----------------------------------------------------------------------


def decode_rule(body: bytes, base: int = 0) -> Rule:
    """OPTION_S46_RULE body: flags, ea-len, prefix4-len, ipv4-prefix, prefix6-len, ipv6-prefix, sub-options."""
    if len(body) < 8:
        raise CodecError(base, f"OPTION_S46_RULE needs at least 8 bytes, got {len(body)}")
    flags, ea_len, p4len = body[0], body[1], body[2]
    if ea_len > 48:
        raise CodecError(base + 1, f"ea-len {ea_len} > 48")
    if p4len > 32:
        raise CodecError(base + 2, f"prefix4-len {p4len} > 32")
    # RFC 7598 §4.1: bits after prefix4-len "MUST be initialized to zero by the sender and
    # ignored by the receiver" — so they are masked, not rejected.
    v4 = int.from_bytes(body[3:7], "big") & (((1 << p4len) - 1) << (32 - p4len))
    prefix6, pos = _decode_prefix6(body, 7, base, "OPTION_S46_RULE")
    pp = _decode_portparams_subopts(body[pos:], base + pos, "OPTION_S46_RULE")
    try:
        return Rule(
            ipv6_prefix=prefix6,
            ipv4_prefix=IPv4Network((v4, p4len)),
            ea_len=ea_len,
            portparams=pp,
            forwarding=bool(flags & 1),
            reserved_flags=flags >> 1,
        )
    except MapeParameterError as e:
        raise CodecError(base, f"OPTION_S46_RULE: {e}") from None


def encode_rule(rule: Rule) -> bytes:
    flags = (rule.reserved_flags << 1) | int(rule.forwarding)
    body = bytes([flags, rule.ea_len, rule.r]) + rule.ipv4_prefix.network_address.packed
    body += _encode_prefix6(rule.ipv6_prefix)
    if rule.portparams is not None:
        body += encode_portparams(rule.portparams)
    return encode_option(OPTION_S46_RULE, body)


def decode_br(body: bytes, base: int = 0) -> BorderRelay:
    if len(body) != 16:
        raise CodecError(base, f"OPTION_S46_BR must be 16 bytes, not {len(body)}")
    return BorderRelay(IPv6Address(body))


def encode_br(br: BorderRelay | IPv6Address) -> bytes:
    address = br.address if isinstance(br, BorderRelay) else br
    return encode_option(OPTION_S46_BR, address.packed)


def decode_dmr(body: bytes, base: int = 0) -> DefaultMappingRule:
    prefix, pos = _decode_prefix6(body, 0, base, "OPTION_S46_DMR")
    if pos != len(body):
        raise CodecError(base + pos, f"OPTION_S46_DMR: {len(body) - pos} byte(s) after the prefix")
    return DefaultMappingRule(prefix)


def encode_dmr(dmr: DefaultMappingRule) -> bytes:
    return encode_option(OPTION_S46_DMR, _encode_prefix6(dmr.prefix))


def decode_v4v6bind(body: bytes, base: int = 0) -> V4V6Bind:
    if len(body) < 5:
        raise CodecError(base, f"OPTION_S46_V4V6BIND needs at least 5 bytes, got {len(body)}")
    ipv4 = IPv4Address(body[0:4])
    prefix, pos = _decode_prefix6(body, 4, base, "OPTION_S46_V4V6BIND")
    pp = _decode_portparams_subopts(body[pos:], base + pos, "OPTION_S46_V4V6BIND")
    return V4V6Bind(ipv4, prefix, pp)


def encode_v4v6bind(bind: V4V6Bind) -> bytes:
    body = bind.ipv4.packed + _encode_prefix6(bind.ipv6_prefix)
    if bind.portparams is not None:
        body += encode_portparams(bind.portparams)
    return encode_option(OPTION_S46_V4V6BIND, body)


_DECODERS = {
    OPTION_S46_RULE: decode_rule,
    OPTION_S46_BR: decode_br,
    OPTION_S46_DMR: decode_dmr,
    OPTION_S46_V4V6BIND: decode_v4v6bind,
}


def encode_suboption(opt: SubOption) -> bytes:
    if isinstance(opt, Rule):
        return encode_rule(opt)
    if isinstance(opt, BorderRelay):
        return encode_br(opt)
    if isinstance(opt, DefaultMappingRule):
        return encode_dmr(opt)
    if isinstance(opt, V4V6Bind):
        return encode_v4v6bind(opt)
    return encode_option(opt.code, opt.body)


# -- containers ----------------------------------------------------------------------------------


def decode_container_body(code: int, body: bytes, base: int = 0) -> Container:
    """Decode the sub-options of a container body (``base`` = offset of the body in the caller's buffer)."""
    if code not in CONTAINERS:
        raise CodecError(base, f"option {code} is not an S46 container (94, 95 or 96)")
    options: list[SubOption] = []
    for sub, sbody, at in iter_options(body, base):
        decoder = _DECODERS.get(sub)
        options.append(decoder(sbody, at + 4) if decoder else UnknownOption(sub, sbody, at))
    return Container(code, tuple(options), base - 4)


def decode_container(data: bytes, base: int = 0) -> Container:
    """Decode one whole container option (header included) filling ``data``."""
    opts = list(iter_options(data, base))
    if len(opts) != 1:
        raise CodecError(base, f"expected one container option, found {len(opts)} options")
    code, body, at = opts[0]
    return decode_container_body(code, body, at + 4)


def decode_option94(data: bytes) -> Container:
    """A MAP-E container given either whole (``00 5e len …``) or as its body alone.

    A body starts with a sub-option code (89, 90, …), never with 94, so the two are told apart
    by the first two bytes and a header length that matches the buffer.
    """
    if (
        len(data) >= 4
        and int.from_bytes(data[0:2], "big") == OPTION_S46_CONT_MAPE
        and int.from_bytes(data[2:4], "big") == len(data) - 4
    ):
        return decode_container(data)
    return decode_container_body(OPTION_S46_CONT_MAPE, data, 0)


def encode_container(container: Container) -> bytes:
    return encode_option(container.code, b"".join(encode_suboption(o) for o in container.options))


def mape_container(rules: list[Rule] | tuple[Rule, ...], brs: list[IPv6Address] | tuple[IPv6Address, ...]) -> Container:
    """A MAP-E container in the order operators send it: rules first, then BRs."""
    return Container(OPTION_S46_CONT_MAPE, tuple(rules) + tuple(BorderRelay(b) for b in brs))


def validate_container(container: Container) -> None:
    """RFC 7598 §5: what each container must hold.  Raises CodecError; the client discards the container."""
    at = container.offset
    name = CONTAINERS.get(container.code, str(container.code))
    for u in container.unknown:
        raise CodecError(u.offset, f"{name} container: unsupported sub-option {u.code}: container discarded")
    kinds = [type(o) for o in container.options]
    rules, brs = kinds.count(Rule), kinds.count(BorderRelay)
    dmrs, binds = kinds.count(DefaultMappingRule), kinds.count(V4V6Bind)
    if container.code == OPTION_S46_CONT_MAPE:
        if not rules:
            raise CodecError(at, "MAP-E container without OPTION_S46_RULE")
        if not brs:
            raise CodecError(at, "MAP-E container without OPTION_S46_BR")
        if dmrs or binds:
            raise CodecError(at, "MAP-E container with a DMR or a V4V6BIND")
    elif container.code == OPTION_S46_CONT_MAPT:
        if not rules:
            raise CodecError(at, "MAP-T container without OPTION_S46_RULE")
        if dmrs != 1:
            raise CodecError(at, f"MAP-T container needs exactly one OPTION_S46_DMR, has {dmrs}")
        if brs or binds:
            raise CodecError(at, "MAP-T container with a BR or a V4V6BIND")
    else:
        if brs != 1:
            raise CodecError(at, f"Lightweight 4over6 container needs exactly one OPTION_S46_BR, has {brs}")
        if binds > 1 or rules or dmrs:
            raise CodecError(at, "Lightweight 4over6 container: at most one V4V6BIND and no rules or DMR")


def mape_containers(options: bytes) -> tuple[list[Container], list[CodecError]]:
    """From a DHCPv6 message's options, the valid MAP-E containers and why the others were discarded.

    ``options`` must itself be well-formed TLVs (a broken outer framing raises CodecError).
    """
    good: list[Container] = []
    discarded: list[CodecError] = []
    for code, body, at in iter_options(options):
        if code != OPTION_S46_CONT_MAPE:
            continue
        try:
            c = decode_container_body(code, body, at + 4)
            validate_container(c)
        except CodecError as e:
            discarded.append(e)
            continue
        good.append(c)
    return good, discarded
