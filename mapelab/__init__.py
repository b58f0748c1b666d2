"""mapelab: build, provision and prove MAP-E (RFC 7597) CE support on OpenBSD.

Layers, and the only direction imports may go: ``mapelab.tasks`` (invoke, printing) →
the library sub-packages (scenario, testbed, ce, qemu, guests, openbsd, …) → ``mapelab.mape``
(pure RFC arithmetic and codec).
"""

__version__ = "0.1.0"
