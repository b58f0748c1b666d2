"""The customer side: the CE driver interface, its backends, and the reference CE daemon
(docs/architecture.md, "one suite, several CEs").

Host side (this package's modules) — what the e2e suite and the tasks use:

* :mod:`.driver` — the interface every e2e test uses (``create("linux", slot)``), the typed
  state snapshot, capabilities and the ``unsupported`` verdict;
* :mod:`.reference` — what both backends of the reference CE share (reading its state, its command line);
* :mod:`.backend_linux` — the reference CE in the testbed slot's namespace;
* :mod:`.vmkeeper` — the thread that boots, holds and stops a CE's guest (every VM backend uses it);
* :mod:`.backend_linux_vm` — the reference CE inside the CI Linux guest;
* :mod:`.backend_openbsd` — a patched OpenBSD guest as the CE.

Guest side — :mod:`.daemon`, the reference MAP-E CE daemon, which runs *inside* a namespace or a
guest and may import only the standard library, :mod:`mapelab.mape`, :mod:`mapelab.netio` and itself.

The driver names are imported lazily, so importing :mod:`mapelab.ce.daemon` inside a guest pulls in
nothing of the host side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Capabilities", "Capability", "CeDriver", "CeError", "CeParams", "CeState", "LanHost", "Unsupported",
           "available", "backend", "create", "register"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'mapelab.ce' has no attribute {name!r}")
