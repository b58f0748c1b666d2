"""The accelerator probe on real QEMU: a verdict (here: KVM unusable → TCG) within 30 s."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mapelab.qemu import accel

from .conftest import require_qemu


def test_probe_decides_within_30s_and_says_why(tmp_path: Path, notices: list[str]) -> None:
    require_qemu()
    t0 = time.monotonic()
    a = accel.choose(fresh=True, root=tmp_path)
    took = time.monotonic() - t0
    assert took < 30, f"probe took {took:.1f}s"
    assert a.name in ("kvm", "tcg")
    if a.name == "tcg":
        # loud: the user is told, with the reason, and the timeouts grow
        assert any("using TCG" in n and a.reason in n for n in notices), notices
        assert a.factor > 1
        if os.path.exists("/dev/kvm"):
            assert "KVM" in a.reason
    # the verdict is cached briefly: the next call does not probe again
    t1 = time.monotonic()
    b = accel.choose(root=tmp_path)
    assert b.name == a.name and b.probed_at == a.probed_at and time.monotonic() - t1 < 2


def test_tcg_runs_the_probe_guest() -> None:
    require_qemu()
    ok, secs, detail = accel.run_probe("tcg", 20)
    assert ok, detail
    assert secs < 20
