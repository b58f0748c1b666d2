"""mapelab's Border Relay: a strict RFC 7597 §8 BR in userspace (TUN + raw IPv6 socket for protocol 4).

Run it as its own process inside the ISP namespace — ``python -m mapelab.testbed.br --help`` —
see :mod:`.service` for the command-line contract and :mod:`.relay` for the forwarding rules.
"""

from .relay import Counters, Relay

__all__ = ["Counters", "Relay"]
