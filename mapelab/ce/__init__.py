"""The customer side: the CE driver interface and its backends (docs/architecture.md, "one suite, several CEs").

* :mod:`.driver` — the interface every e2e test uses (``create("linux", slot)``);
* :mod:`.linux` — mapelab's reference MAP-E CE daemon (python3 + iproute2 + nft only);
* :mod:`.dhcp6client` — its DHCPv6 client (IA_PD + option 94, RFC 8415);
* :mod:`.nat` — its nftables ruleset, rendered from the MAP-E model.

The driver names are imported lazily: the daemon (``python -m mapelab.ce.linux``) must import
nothing but ``mapelab.mape``, ``mapelab.netio`` and its own modules, because that is all a Linux
VM gets a copy of.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CeDriver", "CeError", "CeParams", "LanHost", "available", "backend", "create", "register"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'mapelab.ce' has no attribute {name!r}")
