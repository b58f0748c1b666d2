"""The reference Linux MAP-E CE daemon: what runs *inside* a CE (a namespace or a Linux guest).

``python3 -m mapelab.ce.daemon --wan IF --lan IF --lan-address A.B.C.D/N --state-dir DIR``

Everything here may import only the standard library, :mod:`mapelab.mape`, :mod:`mapelab.netio`
and this package: a guest gets a copy of exactly those (``mapelab.ce.reference.DAEMON_FILES``),
and ``tests/unit/ce/test_daemon_imports.py`` holds the line.  The host-side drivers that start,
watch and stop it live one level up, in :mod:`mapelab.ce`.

* :mod:`.service` — the daemon: lease events in, tunnel, addresses, routes and nftables out;
* :mod:`.dhcp6client` — its DHCPv6 client state machine (IA_PD + option 94, RFC 8415);
* :mod:`.nat` — its nftables ruleset, rendered from the MAP-E model;
* :mod:`.system` — the few ``ip``/``nft`` calls and file writes it makes.
"""
