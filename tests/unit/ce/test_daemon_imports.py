"""The reference CE daemon must run in a bare Linux VM: python3's stdlib plus what the guest is given.

What the guest is given is one list, ``mapelab.ce.reference.DAEMON_FILES`` (the linux-vm backend
uploads exactly that); this test imports the daemon in a clean interpreter and checks every
mapelab module it pulls in is covered by the list, and nothing else non-stdlib comes along.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mapelab.ce.reference import DAEMON_FILES

TOP = Path(__file__).resolve().parents[3]


def _covered(module: str) -> bool:
    path = module.replace(".", "/")
    return any(path == f.removesuffix("/__init__.py").removesuffix(".py") or path.startswith(f.rstrip("/") + "/")
               or f == f"{path}.py" or f == f"{path}/__init__.py" for f in (f"mapelab/{x}" for x in DAEMON_FILES))


def test_daemon_import_closure_is_what_the_guest_is_given() -> None:
    code = (
        "import sys, mapelab.ce.daemon.service\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('mapelab') or "
        "m.split('.')[0] not in sys.stdlib_module_names)))\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=TOP).stdout
    modules = [m for m in out.split() if m != "__main__"]
    foreign = [m for m in modules if not m.startswith("mapelab")]
    assert not foreign, f"the CE daemon imports non-stdlib modules {foreign}: a VM guest has only python3"
    uncovered = [m for m in modules if m.startswith("mapelab") and not _covered(m)]
    assert not uncovered, f"the CE daemon imports {uncovered}, which DAEMON_FILES does not upload to a guest"


def test_the_upload_list_names_files_that_exist() -> None:
    pkg = TOP / "mapelab"
    assert all((pkg / f).exists() for f in DAEMON_FILES), [f for f in DAEMON_FILES if not (pkg / f).exists()]
