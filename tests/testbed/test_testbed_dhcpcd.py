"""An independent client: Debian's dhcpcd, run by hand in a CE slot's namespace, against the testbed's Kea.

dhcpcd 9.4 requests OPTION_S46_CONT_MAPE with ``option dhcp6_s46_cont_mape`` and hands its
hook script what it decoded.  Its built-in definition of option 89 lacks prefix6-len (it logs
"malformed embedded option") and it names the BR variable ``s64_br``, so only ea_len, prefix4
and the BR are compared — an independent, partial cross-check of Kea and of mapelab's config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from ipaddress import IPv6Network
from pathlib import Path

import pytest

from mapelab import scenario as scenario_mod
from tests.testbed.testbed_fixture import make_testbed, require_testbed, runs_root  # noqa: F401

DHCPCD = "/usr/sbin/dhcpcd"
HOOK = """#!/bin/sh
env | sort > "{dir}/env-$reason.tmp" && mv "{dir}/env-$reason.tmp" "{dir}/env-$reason"
"""
CONF = """script {dir}/hook.sh
ipv6only
noipv6rs
option dhcp6_s46_cont_mape
ia_pd 1
"""


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize("name", ["cosmote-like", "rfc7597-example1", "k0-full-address"])
def test_dhcpcd_decodes_what_the_scenario_says(make_testbed, tmp_path: Path, name: str) -> None:  # noqa: F811
    require_testbed(DHCPCD)
    scn = scenario_mod.load(name)
    tb = make_testbed(name, br=False)
    slot = tb.status.slots[0]
    assert slot.ce_netns
    (tmp_path / "hook.sh").write_text(HOOK.format(dir=tmp_path))
    (tmp_path / "hook.sh").chmod(0o755)
    (tmp_path / "dhcpcd.conf").write_text(CONF.format(dir=tmp_path))
    state = [Path(f"/var/lib/dhcpcd/{slot.wan_if}.lease6")]
    duid = Path("/var/lib/dhcpcd/duid")
    duid_existed = duid.exists()
    log = (tmp_path / "dhcpcd.log").open("wb")
    p = subprocess.Popen(["ip", "netns", "exec", slot.ce_netns, DHCPCD, "-6", "-B", "-d", "-f",
                          str(tmp_path / "dhcpcd.conf"), slot.wan_if], stdout=log, stderr=subprocess.STDOUT)
    bound = tmp_path / "env-BOUND6"
    try:
        deadline = time.monotonic() + 20
        while not bound.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert bound.exists(), (tmp_path / "dhcpcd.log").read_text()[-2000:]
        env = _env(bound)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)  # our own dhcpcd, by PID; it stops its privsep helpers
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
        for f in state:
            f.unlink(missing_ok=True)
        if not duid_existed:
            duid.unlink(missing_ok=True)
    prefix = IPv6Network(f"{env['new_dhcp6_ia_pd1_prefix1']}/{env['new_dhcp6_ia_pd1_prefix1_length']}")
    assert prefix == scn.first_prefix()
    rule = scn.rules[0]
    assert int(env["new_dhcp6_s46_cont_mape_s46_rule_ea_len"]) == rule.ea_len
    assert env["new_dhcp6_s46_cont_mape_s46_rule_ipv4_prefix"] == str(rule.ipv4_prefix.network_address)
    assert int(env["new_dhcp6_s46_cont_mape_s46_rule_prefix4_len"]) == rule.r
    br = env.get("new_dhcp6_s46_cont_mape_s46_br") or env.get("new_dhcp6_s46_cont_mape_s64_br")
    assert br == str(scn.br)
