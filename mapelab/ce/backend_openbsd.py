"""Backend ``openbsd``: a patched OpenBSD, built by ``invoke build-vm``, as the CE under test.

Why this is the backend that matters: the three pieces an OpenBSD router behind a MAP-E ISP
needs — pf ``map-e-portset``, dhcp6leased's Softwire46 options and lease-to-gif(4)
orchestration — are proven only when the same e2e suite that passes for the reference CE passes
for a booted patched kernel with its matching userland.

How it maps onto the driver interface:

* **Image** — the newest sealed build layer of ``invoke build-vm`` (``--image KEY`` or
  ``release`` picks another); :meth:`OpenBsdCe.image_ready` says whether one exists and which
  command builds it.  The guest runs on a per-run overlay of it.
* **Profile** — ``vm/openbsd/profiles/<name>.toml`` (:mod:`mapelab.ce.openbsd_profiles`): ``static``
  (stock dhcp6leased for the prefix; mapelab derives MAP-E from the scenario and applies what
  :mod:`mapelab.openbsd.ceconf` renders — proves the pf patch alone) or ``dhcp6leased`` (the
  patched daemon with ``request mape`` and the orchestrator the profile pins).  The profile
  declares the capabilities; a check needing one it lacks reports unsupported with its reason.
* **Boot and control** — :class:`~mapelab.ce.vmkeeper.VmKeeper` and :func:`mapelab.guests.base.boot`
  (the same keeper and boot flow as ``linux-vm``); NICs: management on user networking, WAN and
  LAN on the slot's TAPs, found by MAC; everything else over SSH (OpenBSD base has no python3,
  and the suite installs nothing on the CE).
* **Observation** — never what mapelab meant to configure, always what the OS reports: one SSH
  round trip runs the profile's state commands (``ifconfig``, ``netstat -rn``, ``pfctl -sr -v``,
  ``pfctl -ss``, ``pfctl -si``, ``dhcp6leasectl -l``), parsed by :mod:`mapelab.openbsd.outputs`.
  The CE's parameters are read from gif(4) (IPv4 address, tunnel source = MAP address, tunnel
  destination = BR), the WAN's /128 and pf's NAT rule (``map-e-portset a/k/psid``, ``port lo:hi``
  or plain ``nat-to``); what the OS configuration cannot show (an IPv4 prefix length, the PSID
  offset of an unrestricted set) comes from the CE's own lease and is named as such in the state.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, ClassVar

from mapelab.testbed.status import CeSlot

from .driver import (
    Capabilities,
    Capability,
    CeDriver,
    CeError,
    CeParams,
    CeState,
    LeaseState,
    NatState,
    Readiness,
    TunnelState,
    Unsupported,
    poll,
    register,
)
from .vmkeeper import VmKeeper, require_vm_slot

#: where the backend keeps its own files in the guest
GUEST_DIR = "/var/mapelab"
_BEGIN, _END = "@@mapelab-begin", "@@mapelab-end"


def build_images(release: str | None = None, root: Path | None = None) -> list[Any]:
    """Sealed OpenBSD build layers (what ``invoke build-vm`` made), newest first."""
    from mapelab.qemu import images

    out = []
    for img in images.list_images(root):
        o = img.meta.get("openbsd") if img.sealed else None
        if isinstance(o, dict) and o.get("series") and (release is None or o.get("release") == release):
            out.append(img)
    return sorted(out, key=lambda i: i.meta.get("created", 0), reverse=True)


def find_image(image: str | None = None, release: str | None = None, root: Path | None = None) -> Any:
    """The build image to run: ``image`` (a key) or the newest build (of ``release``); CeError naming
    ``invoke build-vm`` when there is none."""
    from mapelab.qemu import images

    if image:
        try:
            img = images.find(image, root)
        except ValueError as e:
            raise CeError(f"--image {image!r}: {e}") from None
        if img is None or not isinstance(img.meta.get("openbsd"), dict) or not img.meta["openbsd"].get("series"):
            raise CeError(f"image {image} is not a sealed OpenBSD build in the cache; invoke vm.list shows the "
                          "images, invoke build-vm --release R builds one")
        return img
    found = build_images(release, root)
    if not found:
        which = f"OpenBSD {release}" if release else "OpenBSD"
        raise CeError(f"no {which} CE image has been built: run invoke build-vm --release {release or '7.9'} "
                      "first (it needs OpenBSD install media and sources: --mirror DIR for a local copy)")
    return found[0]


@dataclass
class Observed:
    """One reading of the CE: each state command's output, parsed, and the parameters it shows."""

    raw: dict[str, tuple[int, str]] = field(default_factory=dict)  # command → (exit status, output)
    params: CeParams | None = None
    why_not: str = ""  # why no parameters could be read (for error messages)
    sources: dict[str, str] = field(default_factory=dict)  # parameter → where it was read
    ifconfig: Any = None
    routes: Any = None
    rules: Any = None
    states: Any = None
    status: Any = None
    lease: Any = None
    problems: list[str] = field(default_factory=list)


@register("openbsd")
class OpenBsdCe(CeDriver):
    """A patched OpenBSD guest on a VM slot's TAPs, set up by a profile.

    ``state_dir`` (on the host) gets ``driver.log``, the console transcripts, ``setup.log`` (every
    command run to set the CE up, with its output) and, at teardown, ``evidence/`` (the state
    commands' last output, /var/log/daemon and /var/log/messages).  ``scenario`` is the testbed's
    effective scenario file (the ``static`` profile derives MAP-E from its rules).
    """

    slot_kind: ClassVar[str] = "vm"
    wants_scenario: ClassVar[bool] = True
    poll_interval: ClassVar[float] = 1.0

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        profile: str = "static",
        image: str | None = None,
        release: str | None = None,
        scenario: str | Path | None = None,
        accel: str | None = None,
        cpus: int = 1,
        memory_mb: int = 1024,
        start_timeout: float | None = None,
        name: str | None = None,
        allow_unverified: bool = False,
    ) -> None:
        super().__init__()
        from mapelab.ce import openbsd_profiles as profiles

        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="mapelab-obsd-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.profile = profiles.load(profile)
        except profiles.ProfileError as e:
            raise CeError(str(e)) from None
        self.image = find_image(image, release)
        self.scenario_path = Path(scenario) if scenario else None
        self.accel = accel
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._given_name = name
        self.allow_unverified = allow_unverified
        self.keeper: VmKeeper | None = None
        self.wan: str | None = None
        self.lan: str | None = None
        self.applied: Any = None  # the static profile's ceconf.CeConfig, once applied
        self.cannot: str | None = None  # why the static profile could not configure MAP-E (pf cannot express it)
        self._check_series()

    # -- what it is ---------------------------------------------------------------------------------

    @classmethod
    def image_ready(cls, **options: Any) -> Readiness:
        try:
            img = find_image(options.get("image"), options.get("release"))
        except CeError as e:
            return Readiness(False, str(e))
        o = img.meta["openbsd"]
        return Readiness(True, f"{img.key}: OpenBSD {o.get('release')} {o.get('arch')}, series {o.get('series')}")

    @property
    def build(self) -> dict[str, Any]:
        return dict(self.image.meta["openbsd"])

    def _check_series(self) -> None:
        """The profile's patch topics must all be in the series the image was built from."""
        from mapelab.openbsd import series as series_mod

        b = self.build
        names = {p["name"] for p in b.get("patches", [])}
        try:
            s = series_mod.load(b["series"])
        except Exception as e:  # the series file moved or changed: say so rather than guess
            raise CeError(f"image {self.image.key} was built from series {b['series']!r}, which cannot be read "
                          f"now ({e}); rebuild with invoke build-vm") from None
        topics = {p.topic for p in s.patches if p.name in names}
        missing = [t for t in self.profile.series_topics if t not in topics]
        if missing:
            raise CeError(f"profile {self.profile.name} needs patch topic(s) {', '.join(missing)}, but image "
                          f"{self.image.key} was built from series {b['series']} with {', '.join(sorted(names))}; "
                          "build an image whose series has them (invoke build-vm --series …) or use --profile static")

    def capabilities(self) -> Capabilities:
        have = {Capability(c) for c in self.profile.supported}
        return Capabilities.of(have, {Capability(c): r for c, r in self.profile.unsupported.items()})

    def describe(self) -> dict[str, Any]:
        b = self.build
        kern = next((s.get("kern_version") for s in b.get("steps", []) if s.get("kern_version")), None)
        orch = self.profile.orchestrator
        return {
            "backend": self.name, "profile": self.profile.name, "image": self.image.key, "base_image": b.get("base"),
            "release": b.get("release"), "arch": b.get("arch"), "series": b.get("series"),
            "patches": b.get("patches", []), "build_kern_version": kern,
            "exercises_topics": list(self.profile.series_topics),
            "orchestrator": {"name": orch.name, "source": orch.source, "commit": orch.commit,
                             "files": {f.path: f.sha256 for f in orch.files}} if orch else "mapelab (static)",
        }

    def attach(self, slot: CeSlot) -> None:
        require_vm_slot(slot, "openbsd")
        super().attach(slot)

    # -- the guest ----------------------------------------------------------------------------------

    @property
    def guest(self) -> Any:
        return self.keeper.guest if self.keeper is not None else None

    def _say(self, msg: str) -> None:
        if self.keeper is not None:
            self.keeper.say(msg)

    def _boot(self, name: str, say: Callable[[str], None]) -> contextlib.AbstractContextManager[Any]:
        from mapelab.guests import base
        from mapelab.guests.openbsd import OPENBSD
        from mapelab.qemu.spec import TapNic

        slot = self._slot()
        assert slot.wan_tap and slot.lan_tap
        return base.boot(self.image, OPENBSD, name=name, taps=(TapNic(slot.wan_tap, host_mtu=slot.wan_mtu),
                                                                 slot.lan_tap),
                         accel=self.accel, cpus=self.cpus, memory_mb=self.memory_mb, progress=say)

    def _sh(self, command: str, *, timeout: float = 60, check: bool = True, g: Any = None) -> Any:
        """One shell command on the CE (ksh), logged with its output in ``setup.log``."""
        guest = g or self.guest
        if guest is None:
            raise CeError("the OpenBSD CE's guest is not running; call start() first")
        r = guest.run(command, timeout=timeout)
        with (self.state_dir / "setup.log").open("a") as f:
            f.write(f"$ {command}\n{r.stdout}{r.stderr}[exit {r.status}]\n")
        if check and r.status != 0:
            raise CeError(f"on the OpenBSD CE, `{command}` exited {r.status}: {(r.stderr or r.stdout).strip()[-400:]}")
        return r

    def _setup(self, g: Any) -> None:
        """Base network and pf, then the profile: everything an admin would type, logged."""
        slot = self._slot()
        assert slot.wan_tap and slot.lan_tap
        p = self.profile
        self.wan, self.lan = g.iface_for_tap(slot.wan_tap), g.iface_for_tap(slot.lan_tap)
        if (self.wan, self.lan) != (p.wan_if, p.lan_if):
            raise CeError(f"the guest named its WAN NIC {self.wan} and its LAN NIC {self.lan}, but profile {p.name} "
                          f"is written for {p.wan_if}/{p.lan_if}; edit [interfaces] in {p.path}")
        from mapelab.openbsd import ceconf

        from . import openbsd_profiles as profiles

        lan = IPv4Network(slot.lan_prefix)
        files = profiles.render_files(p, None, (lan,), slot.wan_mtu) if p.orchestrator else {
            "/etc/dhcp6leased.conf": ceconf.dhcp6leased_conf(p.wan_if, [p.lan_if], request_mape=False),
            "/etc/pf.conf.mape-hook": ceconf.pf_conf_hook(p.anchor, p.anchor_file),
        }
        # The management NIC's DHCP lease must never hold the IPv4 default route of a CE
        # (dhcpleased.conf(5) 1.16: "ignore routes"); SSH keeps working, QEMU's host is on-link.
        self._put_text(g, "/etc/dhcpleased.conf", "interface vio0 { ignore routes }\n")
        self._sh("pkill -HUP -x dhcpleased; route -qn delete -inet default; true", g=g)
        self._sh(f"ifconfig {self.lan} inet {slot.lan_gateway} netmask {lan.netmask} up", g=g)
        self._sh(f"ifconfig {self.wan} mtu {slot.wan_mtu} inet6 autoconf up", g=g)
        self._sh("sysctl net.inet.ip.forwarding=1", g=g)
        for path, text in files.items():
            if path.startswith("/") and path != "/etc/pf.conf.mape-hook":
                self._put_text(g, path, text)
        self._put_text(g, p.anchor_file, "")
        hook = files["/etc/pf.conf.mape-hook"]
        self._sh(f"grep -q 'anchor \"{p.anchor}\"' /etc/pf.conf || cat >> /etc/pf.conf <<'EOF'\n{hook}EOF", g=g)
        self._sh("pfctl -f /etc/pf.conf && (pfctl -e 2>/dev/null; pfctl -si | head -1)", g=g)
        self._sh("rcctl enable dhcp6leased && rcctl restart dhcp6leased", g=g)
        if p.orchestrator is not None:
            self._install_orchestrator(g)
        else:
            self._apply_static(g)

    def _put_text(self, g: Any, path: str, text: str, mode: str = "644") -> None:
        d = shlex.quote(str(Path(path).parent))
        self._sh(f"mkdir -p {d} && cat > {shlex.quote(path)}.mlnew <<'MAPELAB_EOF'\n{text}MAPELAB_EOF\n"
                 f"chmod {mode} {shlex.quote(path)}.mlnew && mv {shlex.quote(path)}.mlnew {shlex.quote(path)}", g=g)

    def _install_orchestrator(self, g: Any) -> None:
        """Fetch the profile's pinned orchestrator files on the host (sha256-verified), install them."""
        from mapelab.openbsd.errors import OpenBSDError
        from mapelab.openbsd.fetch import fetch

        orch = self.profile.orchestrator
        assert orch is not None
        if orch.unverified_files and not self.allow_unverified:
            raise CeError(f"profile {self.profile.name}: {orch.name} files without a sha256 pin "
                          f"({', '.join(f.path for f in orch.unverified_files)}); pin them in {self.profile.path} "
                          "or pass allow_unverified (test-e2e --allow-unverified)")
        for f in orch.files:
            try:
                got = fetch(f.url, f.sha256, allow_unverified=self.allow_unverified, name=Path(f.path).name)
            except OpenBSDError as e:
                raise CeError(f"{orch.name}: {e}") from None
            self._sh(f"mkdir -p {shlex.quote(str(Path(f.install).parent))}", g=g)
            g.ssh.put(got.path, f.install)
            self._sh(f"chmod {f.mode} {shlex.quote(f.install)}", g=g)
            self._say(f"installed {f.path} ({got.sha256[:12]}{'' if got.verified else ', UNVERIFIED'}) → {f.install}")
        cmd = " ".join(shlex.quote(a) for a in orch.raw.get("command", []))
        self._sh(f"rcctl enable {orch.name} && {cmd}", g=g, timeout=120)

    def _apply_static(self, g: Any) -> None:
        """The ``static`` profile: wait for stock dhcp6leased's prefix, derive MAP-E from the
        scenario's rules for it, and apply what ceconf renders."""
        from mapelab import scenario as scenario_mod
        from mapelab.openbsd import ceconf, outputs

        if self.scenario_path is None:
            raise CeError("the static profile derives MAP-E from the scenario's rules: create the driver with "
                          "scenario=<the testbed's effective scenario file>")
        sc = scenario_mod.load(self.scenario_path)
        deadline = time.monotonic() + 60
        prefix: IPv6Network | None = None
        while prefix is None:
            lease = outputs.parse_dhcp6leasectl(self._sh(f"dhcp6leasectl -l {self.wan}", g=g, check=False).stdout)
            prefix = lease.prefixes.get(0)
            if prefix is None:
                if time.monotonic() > deadline:
                    raise CeError(f"stock dhcp6leased got no delegated prefix on {self.wan} within 60 s; "
                                  f"see {self.state_dir}/setup.log")
                time.sleep(2)
        params = sc.derive(prefix)
        slot = self._slot()
        try:
            cfg = ceconf.render(params, ceconf.Site(wan_if=self.profile.wan_if, lan_networks=(slot.lan_prefix,),
                                                    wan_mtu=slot.wan_mtu, gif_if=self.profile.gif_if,
                                                    anchor=self.profile.anchor))
        except ceconf.CannotRender as e:
            self.cannot = str(e)
            self._say(f"cannot configure MAP-E for {prefix}: {e}")
            return
        self._put_text(g, self.profile.anchor_file, cfg.anchor_text)
        self._put_text(g, f"{GUEST_DIR}/apply.sh", cfg.apply_script(), mode="755")
        self._put_text(g, f"{GUEST_DIR}/withdraw.sh", cfg.withdraw_script(), mode="755")
        self._sh(f"sh -x {GUEST_DIR}/apply.sh", g=g)
        self.applied = cfg
        self._say(f"static MAP-E applied for {prefix}: {params.ipv4} PSID {params.psid}/{params.psid_len}")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.keeper is not None and self.keeper.alive:
            return
        from mapelab.qemu import accel as accel_mod
        from mapelab.qemu.machine import unique_name

        slot = self._slot()
        # OpenBSD boots to SSH in 300 s under KVM at worst, 900 s under TCG (the reference notes' table)
        timeout = self.start_timeout or accel_mod.choose(self.accel).timeout(300, 1200)
        self.keeper = VmKeeper("openbsd", self.state_dir, self._boot, self._setup, start_timeout=timeout)
        self.keeper.start(self._given_name or unique_name(f"ceobsd{slot.index}"))

    def _up(self, what: str) -> None:
        if self.keeper is None:
            raise CeError(f"{what}: the OpenBSD CE is not started; call start() first")
        self.keeper.up(what)

    def teardown(self) -> None:
        if self.keeper is None:
            return
        self.keeper.stop(before_qemu=self._keep_evidence)

    def _keep_evidence(self, g: Any) -> None:
        d = self.state_dir / "evidence"
        d.mkdir(parents=True, exist_ok=True)
        for cmd in (*self.profile.state_commands, "sysctl -n kern.version", "tail -n 300 /var/log/daemon",
                    "tail -n 300 /var/log/messages"):
            with contextlib.suppress(Exception):
                r = g.run(cmd, timeout=30)
                (d / (re.sub(r"[^A-Za-z0-9_.-]+", "_", cmd).strip("_")[:80] + ".txt")).write_text(
                    f"$ {cmd}\n{r.stdout}{r.stderr}[exit {r.status}]\n")

    # -- observation --------------------------------------------------------------------------------

    def observe(self) -> Observed:
        """Run every state command in one SSH round trip and read the CE's parameters from the OS."""
        from mapelab.openbsd import outputs

        self._up("observe")
        cmds = list(self.profile.state_commands)
        script = "; ".join(f"echo '{_BEGIN} {i}'; {c} 2>&1; echo \"{_END} {i} $?\"" for i, c in enumerate(cmds))
        r = self.guest.run(script, timeout=60)
        ob = Observed()
        for i, c in enumerate(cmds):
            m = re.search(rf"^{_BEGIN} {i}\r?\n(.*?)^{_END} {i} (\d+)\r?$", r.stdout, re.S | re.M)
            ob.raw[c] = (int(m.group(2)), m.group(1)) if m else (-1, "")
        text = {c.split()[0] + (" " + c.split()[1] if c.startswith("pfctl") else ""): out
                for c, (_st, out) in ob.raw.items()}
        ob.ifconfig = outputs.parse_ifconfig(text.get("ifconfig", ""))
        ob.routes = outputs.parse_routes(text.get("netstat", ""))
        ob.rules = outputs.parse_pf_rules(next((o for c, (_s, o) in ob.raw.items() if " -sr" in c), ""))
        ob.states = outputs.parse_pf_states(next((o for c, (_s, o) in ob.raw.items() if c.startswith("pfctl -ss")), ""))
        ob.status = outputs.parse_pf_status(next((o for c, (_s, o) in ob.raw.items() if c.startswith("pfctl -si")), ""))
        ob.lease = outputs.parse_dhcp6leasectl(text.get("dhcp6leasectl", ""))
        for name, parsed in (("ifconfig", ob.ifconfig), ("routes", ob.routes), ("pf rules", ob.rules),
                             ("pf states", ob.states), ("pf status", ob.status), ("dhcp6leasectl", ob.lease)):
            ob.problems += [f"{name}: {p}" for p in getattr(parsed, "problems", [])]
        self._read_params(ob)
        return ob

    def _read_params(self, ob: Observed) -> None:
        """The CE's MAP-E parameters as its OS shows them, or why they cannot be read."""
        p = self.profile
        gif = ob.ifconfig.interfaces.get(p.gif_if)
        wan = ob.ifconfig.interfaces.get(p.wan_if)
        if gif is None or gif.tunnel is None or not gif.inet:
            ob.why_not = f"{p.gif_if} has no tunnel or no IPv4 address"
            return
        map6, br = gif.tunnel.src, gif.tunnel.dst
        if not isinstance(map6, IPv6Address) or not isinstance(br, IPv6Address):
            ob.why_not = f"{p.gif_if} tunnels over IPv4 ({gif.tunnel.src} -> {gif.tunnel.dst}), not IPv6"
            return
        if wan is None or not any(a.address == map6 and a.prefixlen == 128 for a in wan.inet6):
            ob.why_not = f"the MAP address {map6} (gif tunnel source) is not a /128 on {p.wan_if}"
            return
        nat = [r for r in ob.rules.rules if "nat-to" in r.text]
        if not nat:
            ob.why_not = f"no nat-to rule in anchor {p.anchor}"
            return
        prefix = ob.lease.prefixes.get(0)
        if prefix is None:
            ob.why_not = f"dhcp6leasectl shows no delegated prefix on {p.wan_if}"
            return
        rule = nat[0]
        lease_offset, ipv4_len = self._lease_facts(ob, prefix)
        pset = rule.map_e_portset
        if pset is not None:
            offset, k, psid = pset
            ob.sources["psid"] = f"pf: map-e-portset {offset}/{k}/{psid}"
        elif rule.nat_port_range is not None:
            lo, hi = rule.nat_port_range
            size = hi + 1 if lo == 1 else hi - lo + 1
            m = int(math.log2(size)) if size > 0 and size & (size - 1) == 0 else -1
            if m < 0:
                ob.why_not = f"nat-to port {lo}:{hi} is not one PSID block (offset 0)"
                return
            offset, k, psid = 0, 16 - m, hi >> m
            ob.sources["psid"] = f"pf: nat-to port {lo}:{hi} (PSID offset 0)"
        else:
            offset, k, psid = lease_offset, 0, 0
            ob.sources["psid"] = "pf: plain nat-to (no port restriction)"
            ob.sources["psid_offset"] = "the CE's lease (no port restriction, so pf shows none)"
        ob.sources.update(ipv4=f"ifconfig {p.gif_if} inet", map_address=f"ifconfig {p.gif_if} tunnel source",
                          br=f"ifconfig {p.gif_if} tunnel destination", delegated_prefix="dhcp6leasectl -l",
                          ipv4_len="the CE's lease (ifconfig shows the address only)")
        ob.params = CeParams(gif.inet[0].address, ipv4_len, psid, k, offset, map6, br, prefix)

    def _lease_facts(self, ob: Observed, prefix: IPv6Network) -> tuple[int, int]:
        """(PSID offset, IPv4 length) from what the CE itself was given: its option-94 lease, or for
        the static profile the parameters mapelab applied."""
        with contextlib.suppress(Exception):
            if ob.lease.mape is not None:
                d = ob.lease.derive(0)
                return d.psid_offset, d.ipv4_len
        if self.applied is not None:
            return self.applied.params.psid_offset, self.applied.params.ipv4_len
        return 6, 32

    def limitations(self) -> dict[str, str]:
        """What this CE, correctly configured, still cannot do for these parameters (pf's limits)."""
        return {u.what: u.reason for u in self.applied.limitations} if self.applied is not None else {}

    def wait_provisioned(self, timeout: float = 30.0, *, different_from: CeParams | None = None) -> CeParams:
        self._up("waiting for provisioning")
        if self.cannot:
            raise Unsupported(f"OpenBSD cannot be configured for these MAP-E parameters: {self.cannot}")
        last: dict[str, str] = {}

        def check() -> CeParams | None:
            ob = self.observe()
            last["why"] = ob.why_not
            if ob.params is None or (different_from is not None and ob.params == different_from):
                return None
            return ob.params

        return poll("MAP-E provisioning" + (" with new parameters" if different_from else ""), timeout, check,
                    interval=self.poll_interval,
                    on_timeout=lambda: f"the CE shows: {last.get('why') or 'the same parameters'}. {self.log_tail()}")

    def wait_withdrawn(self, timeout: float = 30.0) -> None:
        self._up("waiting for withdrawal")
        poll("MAP-E withdrawal", timeout, lambda: self.observe().params is None, interval=self.poll_interval,
             on_timeout=lambda: f"the CE still has gif, its MAP address and the NAT rule. {self.log_tail()}")

    def state(self) -> CeState:
        self._up("state")
        ob = self.observe()
        p = self.profile
        gif = ob.ifconfig.interfaces.get(p.gif_if)
        mss = next((int(m.group(1)) for r in ob.rules.rules if (m := re.search(r"max-mss (\d+)", r.text))), None)
        ranges: tuple[tuple[int, int], ...] | None = None
        if ob.params is not None and ob.params.psid_len:
            ranges = tuple(ob.params.port_set.ranges())
        prefix = ob.lease.prefixes.get(0)
        sys_r = self.guest.run("uname -srm; sysctl -n kern.version", timeout=30)
        uname, _, kern = sys_r.stdout.partition("\n")
        return CeState(
            backend=self.name,
            status="provisioned" if ob.params else ("withdrawn" if prefix else "soliciting"),
            running=True,
            params=ob.params,
            generation=None,
            lease=LeaseState(prefix=prefix, option94=()) if ob.lease.interface else None,
            tunnel=TunnelState(name=p.gif_if, mode="gif", mtu=gif.mtu if gif else None, mss=mss,
                               local=ob.params.map_address if ob.params else None,
                               remote=ob.params.br if ob.params else None),
            nat=NatState(rules=len(ob.rules.rules), port_ranges=ranges,
                         counters={f"rule-{r.number if r.number is not None else i}-packets": r.packets or 0
                                   for i, r in enumerate(ob.rules.rules)}),
            counters={"pf-states": len(ob.states.states),
                      **{f"pf-{sec}-{k}": v for sec, d in ob.status.sections.items() for k, v in d.items()}},
            errors=tuple(ob.problems) + ((ob.why_not,) if not ob.params and ob.why_not else ()),
            system={"os": "OpenBSD", "uname": uname.strip(), "kern.version": kern.strip()},
            live={c: out for c, (_st, out) in ob.raw.items()},
            extra={"param_sources": ob.sources, "profile": p.name, "image": self.image.key,
                   "wan": self.wan, "lan": self.lan, "timings": dict(self.keeper.timings) if self.keeper else {}},
        )

    def log_tail(self, lines: int = 15) -> str:
        if self.guest is None:
            return "(guest not running)"
        with contextlib.suppress(Exception):
            r = self.guest.run(f"tail -n {lines} /var/log/daemon", timeout=20)
            return "last lines of the CE's /var/log/daemon:\n  " + "\n  ".join(r.stdout.splitlines())
        return "(no log)"

    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        self._up("run_in_ce")
        r = self.guest.run(shlex.join(argv), timeout=timeout)
        return subprocess.CompletedProcess(list(argv), r.status, r.stdout, r.stderr)

    def usable_ports(self, proto: str) -> frozenset[int] | None:
        """The ports pf can hand out from this CE's set: the set minus OpenBSD's reserved ports."""
        from mapelab.openbsd import natports

        params = self.applied.params if self.applied is not None else None
        if params is None:
            return None
        return natports.allocatable_ports(params, proto)

    # -- capabilities --------------------------------------------------------------------------------

    def _how(self, cap: Capability, what: str) -> str:
        self.require(cap, what)
        cmd = self.profile.how.get(cap.value)
        if not cmd:
            raise CeError(f"profile {self.profile.name} supports {cap.value} but says not how: add it to "
                          f"[capabilities.how] in {self.profile.path}")
        return cmd

    def renew(self) -> None:
        self._up("renew")
        self._sh(self._how(Capability.RENEW, "renew"))

    def restart(self, *, graceful: bool = True) -> None:
        self._up("restart")
        cmd = self._how(Capability.RESTART, "restart")
        if not graceful:
            daemons = [w for w in cmd.split()[2:] if re.fullmatch(r"[a-z0-9_]+", w)]
            cmd = "; ".join(f"pkill -KILL -x {d}" for d in daemons) + f"; sleep 1; rcctl start {' '.join(daemons)}"
        self._sh(cmd, timeout=120)

    def flap_wan(self, down_for: float = 2.0) -> None:
        self._up("flap-wan")
        cmd = self._how(Capability.FLAP_WAN, "flap-wan")
        down, _, up = cmd.partition(";")
        self._sh(f"{down.strip()}; sleep {down_for:g}; {up.strip()}", timeout=60 + down_for)

    def reload_rules(self) -> None:
        self._up("reload-rules")
        self._sh(self._how(Capability.RELOAD_RULES, "reload-rules"), timeout=120)

    # -- the build itself ------------------------------------------------------------------------------

    def verify_running_build(self) -> dict[str, Any]:
        self.require(Capability.OS_BUILD, "checking the running kernel is the patched build")
        self._up("verify_running_build")
        running = self._sh("sysctl -n kern.version").stdout.strip()
        built = self.describe()["build_kern_version"]
        evidence = {"kern.version": running, "build_kern_version": built, "image": self.image.key,
                    "series": self.build.get("series"), "patches": self.build.get("patches")}
        if not built:
            raise CeError(f"image {self.image.key} records no kern.version of its build; rebuild it with "
                          "invoke build-vm")
        if running != built.strip():
            raise CeError(f"the CE runs {running.splitlines()[0] if running else '?'}, not the kernel built into "
                          f"{self.image.key} ({built.splitlines()[0]})")
        return evidence

    def verify_firewall_consumers(self) -> dict[str, Any]:
        """Each pf consumer the rebuild touched (and the programs the gate starts anyway) runs its
        probe from ``pfvar_consumers.toml``: positive evidence that it talked to the patched pf.
        A program with no honest probe is reported with its reason (``ok`` None), never as passed."""
        from mapelab.openbsd import components

        self.require(Capability.OS_BUILD, "checking the firewall's consumers against the patched kernel")
        self._up("verify_firewall_consumers")
        rebuilt = {s["target"] for s in self.build.get("plan", {}).get("steps", []) if s.get("kind") == "program"}
        out: dict[str, Any] = {}
        for probe in components.consumer_probes():
            if probe.consumer and probe.dir not in rebuilt:
                continue  # not rebuilt by this series: not what the ABI change touched
            if probe.command is None:
                out[probe.dir] = {"ok": None, "unsupported": probe.unsupported, "sources": list(probe.sources)}
                continue
            r = self._sh(probe.command, check=False, timeout=180)
            out[probe.dir] = {**_probe_result(r, probe.ok or "exit 0"), "ioctls": list(probe.ioctls)}
        return out

    def verify_rollback(self) -> dict[str, Any]:
        """Boot the base image (the release kernel and userland) on an overlay of its own and load pf."""
        from mapelab.guests import base
        from mapelab.guests.openbsd import OPENBSD
        from mapelab.qemu import images
        from mapelab.qemu.machine import unique_name

        self.require(Capability.OS_BUILD, "rolling back to the release kernel and userland")
        base_img = images.find(self.build["base"]) if self.build.get("base") else None
        if base_img is None:
            raise CeError(f"the base image {self.build.get('base')} of {self.image.key} is not in the cache; "
                          "rebuild it with invoke build-vm")
        with base.boot(base_img, OPENBSD, name=unique_name("obsdrollback"), accel=self.accel, cpus=self.cpus,
                       memory_mb=self.memory_mb, progress=self._say) as g:
            kern = g.run("sysctl -n kern.version", timeout=30).stdout.strip()
            load = g.run("pfctl -nf /etc/pf.conf && pfctl -f /etc/pf.conf && pfctl -e; pfctl -si | head -1",
                         timeout=60)
        built = self.describe()["build_kern_version"] or ""
        return {"base_image": base_img.key, "kern.version": kern, "differs_from_build": kern != built.strip(),
                "ruleset_loaded": load.status == 0 and "Enabled" in load.stdout, "pfctl": load.stdout + load.stderr}


def _probe_result(r: Any, ok_text: str) -> dict[str, Any]:
    text = (r.stdout + r.stderr)
    ioctl = [ln for ln in text.splitlines() if "ioctl" in ln.lower() or re.search(r"\bDIOC[A-Z]+\b", ln)]
    return {"ok": r.status == 0 and not ioctl, "status": r.status, "expected": ok_text,
            "ioctl_errors": ioctl[:10], "output": text[-2000:]}

