"""The e2e suite's tcpdump captures: a capture that fails is reported in the run record, never dropped."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mapelab.e2e.summary import RunSummary
from tests.e2e.conftest import start_captures, stop_captures


@pytest.mark.skipif(shutil.which("tcpdump") is None or shutil.which("ip") is None, reason="needs tcpdump and ip")
def test_a_capture_that_cannot_start_is_a_warning_in_the_run_record(tmp_path: Path) -> None:
    # A namespace that does not exist: `ip netns exec … tcpdump` really fails, as a wrong name would.
    status = SimpleNamespace(inet_netns="mlzz-no-such-ns", slots=[])
    site = SimpleNamespace(bed=SimpleNamespace(status=status))
    summary = RunSummary(tmp_path)
    where = tmp_path / "test_x"
    where.mkdir()
    with pytest.warns(UserWarning, match="inet.pcap did not start"):  # and on the console, at the end of pytest
        caps = start_captures(site, where, summary)  # type: ignore[arg-type]
    stop_captures(caps, summary)
    [w] = summary.warnings
    assert w.startswith("capture test_x/inet.pcap did not start: ") and "mlzz-no-such-ns" in w, w
    assert (where / "inet.pcap.log").exists()
    summary.write()
    assert "WARNING: capture test_x/inet.pcap did not start" in (tmp_path / "summary.txt").read_text()
