"""The CE driver interface: the only way an e2e test touches a CE (docs/architecture.md, "one suite, several CEs").

Why an interface: the suite's verdict must not depend on what the CE runs on.  A test attaches
a driver to a testbed :class:`~mapelab.testbed.status.CeSlot`, starts it, waits until it is
provisioned (getting back the parameters *the CE* derived, to compare with the model), talks to
the LAN host behind it, inspects a state snapshot, renews, restarts and tears it down.  Backends
register by name: ``linux`` (the reference CE in a namespace) now; ``linux-vm`` and ``openbsd``
plug into the same class later.

Typical use::

    ce = create("linux", slot, state_dir=run_dir / "ce0")
    with ce:                                # start() … teardown()
        got = ce.wait_provisioned(30)
        assert got == CeParams.from_mape(scenario.derive(prefix))
        ce.lan_host().run(["ping", "-c1", "192.0.2.1"])
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, ClassVar

from mapelab.mape import MapeParams, PortSet
from mapelab.testbed.status import CeSlot


class CeError(RuntimeError):
    """A CE did not do what the test asked: the message says what, the CE's last words, and what to check."""


@dataclass(frozen=True)
class CeParams:
    """What a CE says it derived — comparable with the model via :meth:`from_mape`."""

    ipv4: IPv4Address
    ipv4_len: int
    psid: int
    psid_len: int
    psid_offset: int
    map_address: IPv6Address
    br: IPv6Address | None
    delegated_prefix: IPv6Network

    @classmethod
    def from_mape(cls, p: MapeParams) -> CeParams:
        return cls(p.ipv4, p.ipv4_len, p.psid, p.psid_len, p.psid_offset, p.map_address, p.br, p.delegated_prefix)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CeParams:
        return cls(
            ipv4=IPv4Address(d["ipv4"]),
            ipv4_len=int(d.get("ipv4_len", 32)),
            psid=int(d["psid"]),
            psid_len=int(d["psid_len"]),
            psid_offset=int(d["psid_offset"]),
            map_address=IPv6Address(d["map_address"]),
            br=IPv6Address(d["br"]) if d.get("br") else None,
            delegated_prefix=IPv6Network(d["delegated_prefix"]),
        )

    @property
    def port_set(self) -> PortSet:
        return PortSet(self.psid_offset, self.psid_len, self.psid)

    def differences(self, other: CeParams | MapeParams) -> list[str]:
        """Field-by-field ``name: ours != theirs`` — for assertion messages that show the fix."""
        theirs = CeParams.from_mape(other) if isinstance(other, MapeParams) else other
        return [
            f"{name}: CE {getattr(self, name)} != model {getattr(theirs, name)}"
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(theirs, name)
        ]


@dataclass(frozen=True)
class LanHost:
    """The host behind the CE: where e2e traffic starts.  ``netns`` is None for hosts reached otherwise."""

    netns: str | None
    address: IPv4Address
    gateway: IPv4Address
    prefix: IPv4Network

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on the LAN host (``ip netns exec`` for a namespace host)."""
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(argv)

    def run(self, argv: Sequence[str], *, timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False)
        if check and p.returncode:
            raise CeError(
                f"on LAN host {self.address}: {' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-500:]}"
            )
        return p

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.argv(argv), **kw)


class CeDriver(ABC):
    """One CE attached to one testbed slot.  Subclasses implement the backend-specific steps."""

    #: registry name (``linux``, ``linux-vm``, ``openbsd``)
    name: ClassVar[str] = ""
    #: the testbed slot kind this backend attaches to: ``netns`` or ``vm`` (a VM backend needs
    #: the testbed brought up with every slot a VM slot: ``api.up(..., vm_slots=...)``)
    slot_kind: ClassVar[str] = "netns"

    def __init__(self) -> None:
        self.slot: CeSlot | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, slot: CeSlot) -> None:
        """Bind to a slot; check it is one this backend can use (namespace vs VM)."""
        self.slot = slot

    @abstractmethod
    def start(self) -> None:
        """Boot/launch the CE; returns at once, provisioning happens in the background."""

    @abstractmethod
    def wait_provisioned(self, timeout: float = 30.0, *, different_from: CeParams | None = None) -> CeParams:
        """Block until the CE has applied MAP-E (and, with ``different_from``, until what it applied
        differs from that — the renumbering case); return what it derived."""

    @abstractmethod
    def wait_withdrawn(self, timeout: float = 30.0) -> None:
        """Block until the CE has no MAP-E configuration (option 94 gone, lease expired)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """A snapshot: ``status``, ``params``, ``lease``, ``counters``, plus ``live`` — addresses,
        routes, tunnel, NAT rules as the CE's OS reports them right now."""

    @abstractmethod
    def renew(self) -> None:
        """Make the CE's DHCPv6 client send RENEW now (rather than at T1)."""

    @abstractmethod
    def restart(self, *, graceful: bool = True) -> None:
        """Stop the CE (RELEASE and withdraw when graceful, a kill otherwise) and start it again."""

    @abstractmethod
    def teardown(self) -> None:
        """Stop the CE and leave nothing of it running.  Idempotent."""

    @abstractmethod
    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on the CE itself (inject a packet from the CE side, dump a table)."""

    @property
    def slot_index(self) -> int:
        """The testbed slot this CE is attached to (1-based, as in ``testbed.lan_client``)."""
        return self._slot().index

    def lan_host(self) -> LanHost:
        slot = self._slot()
        return LanHost(slot.lan_netns, slot.lan_host, slot.lan_gateway, slot.lan_prefix)

    # -- helpers --------------------------------------------------------------------------------

    def _slot(self) -> CeSlot:
        if self.slot is None:
            raise CeError(f"{type(self).__name__}: not attached; call attach(slot) first")
        return self.slot

    def __enter__(self) -> CeDriver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


def poll(what: str, timeout: float, check: Callable[[], Any], *, interval: float = 0.05,
         on_timeout: Callable[[], str] = lambda: "") -> Any:
    """Call ``check`` until it returns something truthy; CeError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise CeError(f"timed out after {timeout:.1f}s waiting for {what}. {on_timeout()}")
        time.sleep(interval)


# -- the registry ------------------------------------------------------------------------------------

#: name → module that registers it (imported on first use, so a backend's dependencies load lazily)
KNOWN_BACKENDS = {
    "linux": "mapelab.ce.backend_linux",
    "linux-vm": "mapelab.ce.backend_linux_vm",
    "openbsd": "mapelab.ce.backend_openbsd",
}
_REGISTRY: dict[str, type[CeDriver]] = {}


def register(name: str) -> Callable[[type[CeDriver]], type[CeDriver]]:
    def deco(cls: type[CeDriver]) -> type[CeDriver]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def backend(name: str) -> type[CeDriver]:
    """The driver class registered as ``name``; CeError listing the known ones otherwise."""
    if name not in _REGISTRY and name in KNOWN_BACKENDS:
        try:
            importlib.import_module(KNOWN_BACKENDS[name])
        except ModuleNotFoundError as e:
            if e.name != KNOWN_BACKENDS[name]:
                raise
            raise CeError(f"CE backend {name!r} is not implemented yet ({KNOWN_BACKENDS[name]} is missing); "
                          f"available: {', '.join(available())}") from None
    if name not in _REGISTRY:
        raise CeError(f"unknown CE backend {name!r}; known: {', '.join(sorted(KNOWN_BACKENDS))}")
    return _REGISTRY[name]


def available() -> list[str]:
    """Backends whose module exists in this checkout."""
    out = []
    for name, module in KNOWN_BACKENDS.items():
        if name in _REGISTRY or importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def create(name: str, slot: CeSlot, **options: Any) -> CeDriver:
    """A driver of backend ``name`` attached to ``slot`` (options go to the backend's constructor)."""
    driver = backend(name)(**options)
    driver.attach(slot)
    return driver
