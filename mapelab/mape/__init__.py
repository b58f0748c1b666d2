"""RFC 7597 (MAP-E) arithmetic and the RFC 7598 option codec — pure: no I/O, no other mapelab imports.

Everything in mapelab that names an address, a PSID or a port derives it here: Kea's
configuration, the Border Relay, the reference CE and every end-to-end assertion.
"""

from .br import (
    ADDRESS_MISMATCH,
    NO_PORT,
    NO_RULE,
    PORT_OUTSIDE_SET,
    ce_address,
    ce_address_for,
    source_is_valid,
    spoof_reason,
    tunnel_destination,
)
from .codec import (
    BorderRelay,
    Container,
    DefaultMappingRule,
    UnknownOption,
    V4V6Bind,
    decode_container,
    decode_option94,
    encode_container,
    encode_option,
    mape_container,
    mape_containers,
    validate_container,
)
from .derive import MapeParams, derive, select_rule
from .errors import CodecError, MapeError, MapeParameterError
from .portset import PortSet
from .rule import DEFAULT_PSID_OFFSET, PortParams, Rule

__all__ = [
    "ADDRESS_MISMATCH",
    "DEFAULT_PSID_OFFSET",
    "NO_PORT",
    "NO_RULE",
    "PORT_OUTSIDE_SET",
    "BorderRelay",
    "CodecError",
    "Container",
    "DefaultMappingRule",
    "MapeError",
    "MapeParameterError",
    "MapeParams",
    "PortParams",
    "PortSet",
    "Rule",
    "UnknownOption",
    "V4V6Bind",
    "ce_address",
    "ce_address_for",
    "decode_container",
    "decode_option94",
    "derive",
    "encode_container",
    "encode_option",
    "mape_container",
    "mape_containers",
    "select_rule",
    "source_is_valid",
    "spoof_reason",
    "tunnel_destination",
    "validate_container",
]
