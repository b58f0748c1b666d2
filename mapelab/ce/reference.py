"""What the two backends of the reference CE share: its command line, what a guest is given,
and reading its ``state.json`` into the typed :class:`~mapelab.ce.driver.CeState`.

``linux`` (a namespace) and ``linux-vm`` (a QEMU guest) run the very same daemon
(``python3 -m mapelab.ce.daemon``) and differ only in how they reach it: a local file and a PID,
or SSH.  Everything that interprets the daemon — when it counts as provisioned or withdrawn, the
one-line state brief for error messages, the live snapshot of addresses, routes, tunnel and nft
table — lives here once, on top of two primitives a backend provides: :meth:`_read` and
:meth:`run_in_ce`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Address, IPv6Network
from typing import Any, ClassVar

from .driver import (
    Capabilities,
    Capability,
    CeDriver,
    CeError,
    CeParams,
    CeState,
    LeaseState,
    NatState,
    TunnelState,
    poll,
)

#: what a guest needs of mapelab to run the daemon: paths under mapelab/, uploaded as they are.
#: tests/unit/ce/test_daemon_imports.py checks the daemon's imports stay inside this list.
DAEMON_FILES = ("__init__.py", "mape", "netio", "ce/__init__.py", "ce/daemon")

#: the reference CE's capabilities; a test-only option (``capabilities_off``) removes some to
#: prove the suite reports a missing one as unsupported
REFERENCE_CAPABILITIES = frozenset({
    Capability.DHCP_MAPE, Capability.RENEW, Capability.RESTART, Capability.GENERATION, Capability.DHCP_COUNTERS,
    Capability.FAULTS,
})


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon is run: the same options whichever backend starts it."""

    tunnel: str = "auto"
    max_rt: float = 4.0
    faults: tuple[str, ...] = ()
    verbose: bool = False


def daemon_argv(python: str, wan: str, lan: str, lan_address: IPv4Interface, state_dir: str,
                opts: DaemonOptions) -> list[str]:
    """The daemon's command line — written once for both backends."""
    argv = [python, "-m", "mapelab.ce.daemon", "--wan", wan, "--lan", lan, "--lan-address", str(lan_address),
            "--state-dir", state_dir, "--tunnel", opts.tunnel, "--max-rt", str(opts.max_rt)]
    for f in opts.faults:
        argv += ["--fault", f]
    if opts.verbose:
        argv.append("-v")
    return argv


class ReferenceCe(CeDriver):
    """A driver of mapelab's reference CE daemon, wherever it runs."""

    #: how often the wait loops read the state (an SSH round trip costs more than a file read)
    poll_interval: ClassVar[float] = 0.05

    def __init__(self, *, daemon: DaemonOptions, capabilities_off: Sequence[str] = ()) -> None:
        super().__init__()
        self.daemon = daemon
        try:
            self._off = {Capability(c) for c in capabilities_off}
        except ValueError:
            raise CeError(f"capabilities_off={list(capabilities_off)}: known capabilities are "
                          f"{', '.join(c.value for c in Capability)}") from None

    def capabilities(self) -> Capabilities:
        why = {c: "switched off for this run (capabilities_off, a test-only option)" for c in self._off}
        why.update({c: "the reference CE does not implement it" for c in Capability
                    if c not in REFERENCE_CAPABILITIES and c not in self._off})
        if Capability.OS_BUILD not in self._off:
            why[Capability.OS_BUILD] = ("the reference CE is mapelab's own daemon on Linux, not a kernel and userland "
                                        "built from a patch series (run the suite with --ce openbsd)")
        return Capabilities.of(REFERENCE_CAPABILITIES - self._off, why)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "software": "mapelab reference CE daemon (python3 -m mapelab.ce.daemon)",
                "tunnel": self.daemon.tunnel, "faults": list(self.daemon.faults),
                "capabilities_off": sorted(c.value for c in self._off)}

    @abstractmethod
    def _read(self) -> tuple[bool, dict[str, Any] | None]:
        """(the daemon is alive, its state.json — None before this daemon wrote one)."""

    def _wait_until_up(self, what: str) -> None:
        """Called before waiting or inspecting: a backend that is still booting waits here."""

    def _not_running(self) -> str:
        """Why the daemon is not running, for error messages (a backend may know its exit status)."""
        return "the CE daemon is not running"

    def _system(self) -> dict[str, str]:
        """What the CE runs on, for the run record (``uname`` where the daemon runs)."""
        p = self.run_in_ce(["uname", "-srvm"])
        return {"os": "Linux", "kernel": p.stdout.strip() if p.returncode == 0 else f"unknown ({p.stderr.strip()})"}

    def read_state(self) -> dict[str, Any] | None:
        """The daemon's own state.json (its vocabulary, not the driver's) — None before it wrote one."""
        return self._read()[1]

    def _alive_or_raise(self, what: str) -> None:
        self._state_or_raise(what)

    def _state_or_raise(self, what: str) -> dict[str, Any] | None:
        alive, st = self._read()
        if not alive:
            raise CeError(f"{what}: {self._not_running()}. {self.log_tail()}")
        return st

    def wait_provisioned(self, timeout: float = 30.0, *, different_from: CeParams | None = None) -> CeParams:
        self._wait_until_up("waiting for provisioning")

        def check() -> CeParams | None:
            st = self._state_or_raise("waiting for provisioning")
            if not st or st.get("status") != "provisioned" or not st.get("params"):
                return None
            got = CeParams.from_json(st["params"])
            return None if different_from is not None and got == different_from else got

        return poll(
            "MAP-E provisioning" + (" with new parameters" if different_from else ""), timeout, check,
            interval=self.poll_interval, on_timeout=lambda: f"CE state: {self._brief()}. {self.log_tail()}",
        )

    def wait_withdrawn(self, timeout: float = 30.0) -> None:
        self._wait_until_up("waiting for withdrawal")

        def check() -> bool:
            st = self._state_or_raise("waiting for withdrawal")
            return bool(st and st.get("params") is None and st.get("status") in ("withdrawn", "soliciting"))

        poll("MAP-E withdrawal", timeout, check, interval=self.poll_interval,
             on_timeout=lambda: f"CE state: {self._brief()}. {self.log_tail()}")

    def _brief(self) -> str:
        st = self.read_state()
        if not st:
            return "no state.json from this daemon yet"
        return f"status {st.get('status')}, dhcp {st.get('dhcp_state')}, errors {st.get('errors')}"

    def _json(self, argv: Sequence[str]) -> Any:
        p = self.run_in_ce(argv)
        try:
            return json.loads(p.stdout) if p.stdout.strip() else None
        except json.JSONDecodeError:
            return None

    def state(self) -> CeState:
        self._wait_until_up("state")
        alive, st = self._read()
        st = st or {}
        tunnel = st.get("tunnel") or {}
        live = {
            "addresses": self._json(["ip", "-j", "addr", "show"]),
            "routes4": self._json(["ip", "-j", "-4", "route", "show"]),
            "tunnel": self._json(["ip", "-j", "-d", "link", "show", tunnel.get("name") or "mape0"]),
            "nft": self._json(["nft", "-j", "list", "table", "ip", "mapece"]),
        }
        return state_from_daemon(self.name, alive, st, live, self._system())


def state_from_daemon(backend: str, alive: bool, st: dict[str, Any], live: dict[str, Any],
                      system: dict[str, str]) -> CeState:
    """The daemon's state.json plus the OS's live reports → the driver's typed snapshot."""
    params = CeParams.from_json(st["params"]) if st.get("params") else None
    lease = st.get("lease")
    tunnel = st.get("tunnel") or {}
    nat = nat_summary(live.get("nft"))
    ranges = _psmap_ranges(nat["psmap"]) if nat["psmap"] else None
    return CeState(
        backend=backend,
        status=str(st.get("status", "starting" if alive else "stopped")),
        running=alive,
        params=params,
        generation=st.get("generation"),
        lease=LeaseState(
            prefix=IPv6Network(lease["prefix"]) if lease.get("prefix") else None,
            t1=lease.get("t1"), t2=lease.get("t2"), preferred=lease.get("preferred"), valid=lease.get("valid"),
            option94=tuple(lease.get("option94", [])), discarded=tuple(lease.get("discarded", [])),
        ) if lease else None,
        tunnel=TunnelState(
            name=tunnel.get("name"), mode=tunnel.get("mode"), mtu=tunnel.get("mtu"), mss=tunnel.get("mss"),
            local=params.map_address if params else None,
            remote=IPv6Address(params.br) if params and params.br else None,
        ),
        nat=NatState(rules=nat["rules"], port_ranges=ranges, counters=nat["counters"]),
        counters=dict(st.get("counters", {})),
        events=tuple(st.get("events", [])),
        errors=tuple(st.get("errors", [])),
        system=system,
        live=live,
        extra={k: st[k] for k in ("dhcp_state", "applied_at", "faults", "wan", "lan") if k in st},
    )


def _psmap_ranges(elems: list[Any]) -> tuple[tuple[int, int], ...]:
    """The port ranges in the psmap's elements (``[index, {"concat": [addr, {"range": [lo, hi]}]}]``)."""
    out = []
    for e in elems:
        try:
            value = e[1]["concat"][1]
            lo, hi = value["range"] if isinstance(value, dict) else (value, value)
            out.append((int(lo), int(hi)))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return tuple(sorted(out))


def nat_summary(nft: Any) -> dict[str, Any]:
    """From ``nft -j list table``: the port-set map's elements and every rule counter by comment."""
    out: dict[str, Any] = {"psmap": [], "counters": {}, "rules": 0}
    if not nft:
        return out
    for item in nft.get("nftables", []):
        if "map" in item and item["map"].get("name") == "psmap":
            out["psmap"] = item["map"].get("elem", [])
        if "rule" in item:
            out["rules"] += 1
            rule = item["rule"]
            packets = next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), None)
            label = rule.get("comment") or f"{rule.get('chain')}#{rule.get('handle')}"
            if packets is not None:
                out["counters"][label] = packets
    return out
