"""What the two backends of the reference CE share: reading its daemon's state.json.

``linux`` (a namespace) and ``linux-vm`` (a QEMU guest) run the very same daemon
(``python -m mapelab.ce.linux``) and differ only in how they reach it: a local file and a PID, or
SSH.  Everything that interprets the daemon — when it counts as provisioned or withdrawn, the
one-line state brief for error messages, the live snapshot of addresses, routes, tunnel and nft
table — lives here once, on top of two primitives a backend provides: :meth:`_read` and
:meth:`run_in_ce`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from .driver import CeDriver, CeError, CeParams, poll


class ReferenceCe(CeDriver):
    """A driver of mapelab's reference CE daemon, wherever it runs."""

    #: how often the wait loops read the state (an SSH round trip costs more than a file read)
    poll_interval: ClassVar[float] = 0.05

    @abstractmethod
    def _read(self) -> tuple[bool, dict[str, Any] | None]:
        """(the daemon is alive, its state.json — None before this daemon wrote one)."""

    @abstractmethod
    def log_tail(self, lines: int = 15) -> str:
        """The daemon's last log lines, for error messages."""

    def _wait_until_up(self, what: str) -> None:
        """Called before waiting or inspecting: a backend that is still booting waits here."""

    def _not_running(self) -> str:
        """Why the daemon is not running, for error messages (a backend may know its exit status)."""
        return "the CE daemon is not running"

    def read_state(self) -> dict[str, Any] | None:
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

    def state(self) -> dict[str, Any]:
        self._wait_until_up("state")
        alive, st = self._read()
        st = st or {}
        st["running"] = alive
        st["live"] = {
            "addresses": self._json(["ip", "-j", "addr", "show"]),
            "routes4": self._json(["ip", "-j", "-4", "route", "show"]),
            "tunnel": self._json(["ip", "-j", "-d", "link", "show", st.get("tunnel", {}).get("name", "mape0")]),
            "nft": self._json(["nft", "-j", "list", "table", "ip", "mapece"]),
        }
        st["nat_rules"] = nat_summary(st["live"]["nft"])
        return st


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
