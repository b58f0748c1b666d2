"""The OpenBSD CE backend without OpenBSD: its image choice, its setup commands, and — above all —
how it reads a CE's MAP-E parameters from the OS's own output (the parser samples are built in the
exact formats of OpenBSD's printing code; see tests/unit/openbsd/data/outputs/README.md).

The guest is a stand-in that answers each command with that sample text, as ksh would run the
backend's marker script; everything above it (parsing, deriving, capabilities, errors) is the real
backend."""

from __future__ import annotations

import re
import subprocess
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from mapelab import scenario as scenarios
from mapelab.ce.driver import Capability, CeError, CeParams, Unsupported
from mapelab.qemu import images
from mapelab.qemu.ssh import Result
from mapelab.testbed.status import CeSlot

OUT = Path(__file__).resolve().parents[1] / "openbsd" / "data" / "outputs"
KERN = ("OpenBSD 7.9 (GENERIC.MP) #1: Tue Dec  1 10:00:00 UTC 2026\n"
        "    root@mapelab79:/usr/src/sys/arch/amd64/compile/GENERIC.MP")
RELEASE_KERN = ("OpenBSD 7.9 (GENERIC.MP) #0: Thu Apr  9 2026\n"
                "    deraadt@amd64.openbsd.org:/usr/src/sys/arch/amd64/compile/GENERIC.MP\n")
BASE = "openbsd79-base-0123456789abcdef"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAPELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_build(cache: Path, series: str = "7.9", patches: tuple[str, ...] = ("mape79",)) -> images.Image:
    """A sealed layer whose meta says what invoke build-vm records (the disk is a tiny real qcow2)."""
    inputs = {"series": series, "patches": [{"name": p, "strip": 1, "sha256": "0" * 64} for p in patches]}
    key = images.image_key("openbsd79-build", inputs, parent=BASE)
    with images.LayerBuild(key, kind="openbsd79-build", inputs=inputs, root=cache) as lb:
        images.qemu_img("create", "-q", "-f", "qcow2", str(lb.disk), "1M")
        return lb.commit({"openbsd": {"release": "7.9", "arch": "amd64", "series": series, "base": BASE,
                                      "patches": inputs["patches"],
                                      "plan": {"steps": [{"kind": "program", "target": "sbin/pfctl"}]},
                                      "steps": [{"kind": "check-kernel", "kern_version": KERN}]}})


def slot() -> CeSlot:
    return CeSlot(1, "vm", None, "ml01-t1w", "ml01-t1l", "ml01-t1w", "ml01-t1l", "ml01-lan1",
                  IPv4Network("192.168.1.0/24"), IPv4Address("192.168.1.2"), IPv4Address("192.168.1.1"), 1492)


class FakeGuest:
    """Answers commands with sample outputs; runs the backend's marker script as ksh would."""

    def __init__(self, outputs: dict[str, str], status: dict[str, int] | None = None) -> None:
        self.outputs, self.status, self.commands = outputs, status or {}, []
        self.name = "fake-obsd"

    def run(self, command: str, timeout: float = 60, **_: Any) -> Result:
        self.commands.append(command)
        if "@@mapelab-begin" in command:
            out = []
            for i, cmd in re.findall(r"echo '@@mapelab-begin (\d+)'; (.*?) 2>&1; echo", command):
                out.append(f"@@mapelab-begin {i}\n{self.outputs.get(cmd, '')}@@mapelab-end {i} 0\n")
            return Result(0, "".join(out), "")
        for prefix, text in self.outputs.items():
            if command.startswith(prefix):
                return Result(self.status.get(prefix, 0), text, "")
        return Result(0, "", "")

    def iface_for_tap(self, tap: str) -> str:
        return {"ml01-t1w": "vio1", "ml01-t1l": "vio2"}[tap]


class FakeKeeper:
    def __init__(self, guest: FakeGuest) -> None:
        self.guest, self.timings, self.said = guest, {}, []
        self.alive = True

    def up(self, what: str) -> FakeGuest:
        return self.guest

    def say(self, msg: str) -> None:
        self.said.append(msg)


def outputs(lease: str = "dhcp6leasectl-stock.txt") -> dict[str, str]:
    o = {
        "ifconfig -A": (OUT / "ifconfig-A.txt").read_text(),
        "netstat -rn": (OUT / "netstat-rn.txt").read_text(),
        "pfctl -a mape -sr -v": (OUT / "pfctl-sr-v.txt").read_text(),
        "pfctl -ss": (OUT / "pfctl-ss.txt").read_text(),
        "pfctl -si": (OUT / "pfctl-si.txt").read_text(),
        "dhcp6leasectl -l vio1": (OUT / lease).read_text(),
        "dhcp6leasectl -l -m vio1": (OUT / "dhcp6leasectl-mape.txt").read_text(),
        "cat /var/db/dhcp6leased/vio1": (OUT / "lease-vio1.txt").read_text(),
        "cat /var/db/maped/status.json": "{}\n",
        "uname -srm; sysctl -n kern.version": f"OpenBSD 7.9 amd64\n{KERN}\n",
        "sysctl -n kern.version": KERN + "\n",
    }
    return o


def driver(cache: Path, profile: str = "static", out: dict[str, str] | None = None) -> Any:
    from mapelab.ce.backend_openbsd import OpenBsdCe

    make_build(cache, patches=("mape79", "dhcp6leased-mape-79"))
    sc = scenarios.resolve("cosmote-like")
    ce = OpenBsdCe(cache / "ce", profile=profile, scenario=sc)
    ce.slot = slot()
    ce.keeper = FakeKeeper(FakeGuest(out or outputs()))  # type: ignore[assignment]
    ce.wan, ce.lan = "vio1", "vio2"
    return ce


def test_without_a_build_image_it_names_build_vm(cache: Path) -> None:
    from mapelab.ce.backend_openbsd import OpenBsdCe

    r = OpenBsdCe.image_ready()
    assert not r.ready and "invoke build-vm --release 7.9" in r.detail
    with pytest.raises(CeError, match="invoke build-vm"):
        OpenBsdCe(cache / "ce")
    img = make_build(cache)
    r = OpenBsdCe.image_ready()
    assert r.ready and img.key in r.detail and "series 7.9" in r.detail


def test_a_profile_needing_a_patch_the_image_lacks_is_refused(cache: Path) -> None:
    from mapelab.ce.backend_openbsd import OpenBsdCe

    make_build(cache, patches=("mape79",))
    with pytest.raises(CeError, match=r"needs patch topic.*dhcp6leased-mape"):
        OpenBsdCe(cache / "ce", profile="dhcp6leased")
    assert OpenBsdCe(cache / "ce", profile="static").profile.name == "static"


def test_parameters_are_read_from_the_os_not_from_the_model(cache: Path) -> None:
    ce = driver(cache)
    got = ce.wait_provisioned(1)
    model = scenarios.load("cosmote-like").derive()
    assert got == CeParams.from_mape(model), got.differences(model)
    ob = ce.observe()
    assert ob.sources["psid"] == "pf: map-e-portset 6/6/2" and "tunnel source" in ob.sources["map_address"]
    st = ce.state()
    assert st.status == "provisioned" and st.tunnel.mtu == 1452 and st.tunnel.mss == 1412
    assert st.nat.port_ranges == tuple(model.port_set.ranges()) and st.system["kern.version"].startswith("OpenBSD 7.9")
    assert st.lease is not None and st.lease.prefix == IPv6Network("2001:db8:6200:4200::/56")
    assert "pfctl -ss" in st.live and st.generation is None  # not reported, never invented


@pytest.mark.parametrize(("edit", "why"), [
    (("inet 198.51.100.1 --> 0.0.0.1 netmask 0xffffffff\n", ""), "no tunnel or no IPv4 address"),
    (("inet6 2001:db8:6200:4200:0:c633:6401:2 prefixlen 128\n", ""), "is not a /128 on vio1"),
])
def test_a_half_configured_ce_is_not_provisioned(cache: Path, edit: tuple[str, str], why: str) -> None:
    o = outputs()
    o["ifconfig -A"] = o["ifconfig -A"].replace(*edit)
    ce = driver(cache, out=o)
    assert ce.observe().params is None and why in ce.observe().why_not
    with pytest.raises(CeError, match=re.escape(why)):
        ce.wait_provisioned(0.2)


def test_port_range_and_plain_nat_read_back(cache: Path) -> None:
    o = outputs()
    o["pfctl -a mape -sr -v"] = o["pfctl -a mape -sr -v"].replace("round-robin map-e-portset 6/6/2", "port 1:1023")
    ob = driver(cache, out=o).observe()
    assert ob.params is not None and (ob.params.psid_offset, ob.params.psid_len, ob.params.psid) == (0, 6, 0)
    o["pfctl -a mape -sr -v"] = o["pfctl -a mape -sr -v"].replace(" port 1:1023", "")
    ob = driver(cache, out=o).observe()
    assert ob.params is not None and ob.params.psid_len == 0 and "lease" in ob.sources["psid_offset"]


def test_capabilities_come_from_the_profile_with_reasons(cache: Path) -> None:
    ce = driver(cache)
    caps = ce.capabilities()
    assert Capability.RENEW in caps and Capability.OS_BUILD in caps and Capability.DHCP_MAPE not in caps
    assert "option 94" in caps.reason(Capability.DHCP_MAPE)
    with pytest.raises(Unsupported, match="dhcp-mape"):
        ce.require(Capability.DHCP_MAPE, "following a renumbered lease")
    dce = driver(cache, profile="dhcp6leased")
    assert Capability.DHCP_MAPE in dce.capabilities()


def test_capability_commands_are_the_profiles(cache: Path) -> None:
    ce = driver(cache)
    g = ce.keeper.guest
    ce.renew()
    ce.reload_rules()
    ce.flap_wan(1.5)
    ce.restart(graceful=False)
    assert g.commands[-4:] == ["dhcp6leasectl vio1", "pfctl -a mape -f /etc/pf.anchors/mape",
                               "ifconfig vio1 down; sleep 1.5; ifconfig vio1 up",
                               "pkill -KILL -x dhcp6leased; sleep 1; rcctl start dhcp6leased"]


def test_the_running_kernel_must_be_the_build(cache: Path) -> None:
    ce = driver(cache)
    ev = ce.verify_running_build()
    assert ev["kern.version"] == KERN.strip() and ev["image"] == ce.image.key
    o = outputs()
    o["sysctl -n kern.version"] = RELEASE_KERN
    with pytest.raises(CeError, match="not the kernel built into"):
        driver(cache, out=o).verify_running_build()


def test_describe_names_the_image_series_and_patches(cache: Path) -> None:
    d = driver(cache).describe()
    assert d["backend"] == "openbsd" and d["profile"] == "static" and d["series"] == "7.9"
    assert [p["name"] for p in d["patches"]] == ["mape79", "dhcp6leased-mape-79"]
    assert d["build_kern_version"] == KERN and d["orchestrator"] == "mapelab (static)"


def test_static_setup_is_what_an_admin_would_type(cache: Path) -> None:
    o = outputs()
    ce = driver(cache, out=o)
    g = ce.keeper.guest
    ce._setup(g)
    cmds = "\n".join(g.commands)
    for needle in ("interface vio0 { ignore routes }", "route -qn delete -inet default",
                   "ifconfig vio2 inet 192.168.1.1 netmask 255.255.255.0 up",
                   "ifconfig vio1 mtu 1492 inet6 autoconf up",
                   "request prefix delegation on vio1 for { vio2/64 }", 'anchor "mape"', "rcctl restart dhcp6leased",
                   "match out on gif0 inet from (gif0) to any nat-to (gif0) map-e-portset 6/6/2",
                   "ifconfig gif0 tunnel 2001:db8:6200:4200:0:c633:6401:2 2001:db8:ffff::1",
                   "sh -x /var/mapelab/apply.sh"):
        assert needle in cmds, needle
    assert "request mape" not in cmds  # the static profile proves the pf patch alone
    assert ce.applied is not None and ce.limitations() == {}
    assert ce.usable_ports("tcp") == frozenset(ce.applied.params.port_set) - {587, 749, 750, 751, 853, 871, 2049,
                                                                              *range(6000, 6011)}


def test_setup_refuses_nics_the_profile_does_not_name(cache: Path) -> None:
    ce = driver(cache)
    g = ce.keeper.guest
    g.iface_for_tap = lambda tap: {"ml01-t1w": "em0", "ml01-t1l": "em1"}[tap]  # type: ignore[method-assign]
    with pytest.raises(CeError, match=r"WAN NIC em0.*edit \[interfaces\]"):
        ce._setup(g)


def test_test_e2e_without_an_image_fails_in_seconds_naming_build_vm(cache: Path) -> None:
    top = Path(__file__).resolve().parents[3]
    p = subprocess.run([str(top / "inv"), "test-e2e", "--ce", "openbsd"], capture_output=True, text=True, timeout=60,
                       cwd=top, env={**__import__("os").environ, "MAPELAB_CACHE": str(cache)})
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "invoke build-vm" in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_consumer_probes_run_for_what_the_series_rebuilt(cache: Path) -> None:
    o = outputs()
    o["pfctl -s all"] = "FILTER RULES:\nmatch on gif0 inet proto tcp all scrub (max-mss 1412)\nINFO:\nStatus: Enabled\n"
    ce = driver(cache, out=o)
    ev = ce.verify_firewall_consumers()
    assert set(ev) == {"sbin/pfctl", "sbin/pflogd"}, ev  # the plan rebuilt pfctl only; pflogd is always started
    assert ev["sbin/pfctl"]["status"] == 0 and ev["sbin/pfctl"]["ioctls"]
    g = ce.keeper.guest
    assert any("pfctl -s all" in c for c in g.commands)
