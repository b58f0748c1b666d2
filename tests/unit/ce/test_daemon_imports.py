"""The reference CE daemon must run in a bare Linux VM: python3's stdlib plus these mapelab parts only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[3]
ALLOWED = ("mapelab.mape", "mapelab.netio", "mapelab.ce.linux", "mapelab.ce.dhcp6client", "mapelab.ce.nat",
           "mapelab.ce.system")


def test_daemon_import_closure_is_stdlib_plus_mape_netio_and_itself() -> None:
    code = (
        "import sys, mapelab.ce.linux, mapelab.netio, mapelab.netio.packets\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('mapelab') or "
        "m.split('.')[0] not in sys.stdlib_module_names)))\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=TOP).stdout
    foreign = [m for m in out.split() if m not in ("mapelab", "mapelab.ce", "__main__") and not m.startswith(ALLOWED)]
    assert not foreign, f"the CE daemon imports {foreign}: a VM guest only gets {ALLOWED}"
