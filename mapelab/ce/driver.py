"""The CE driver interface: the only way an e2e test touches a CE (docs/architecture.md, "one suite, several CEs").

Why an interface: the suite's verdict must not depend on what the CE runs on.  A test attaches
a driver to a testbed :class:`~mapelab.testbed.status.CeSlot`, starts it, waits until it is
provisioned (getting back the parameters *the CE* derived, to compare with the model), talks to
the LAN host behind it, inspects a state snapshot, renews, restarts and tears it down.  Backends
register by name: ``linux`` (the reference CE in a namespace), ``linux-vm`` (the same daemon in a
Linux guest) and ``openbsd`` (a patched OpenBSD guest).

Backends differ in what they can do — a CE configured statically cannot renew a lease — so
each declares its :class:`Capabilities`; a check that needs one the CE lacks raises
:class:`Unsupported`, which the suite reports as its own verdict rather than a pass or a skip.

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
import json
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
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


class Unsupported(Exception):
    """The CE cannot do what a check needs (a capability it lacks, a rule pf cannot express).

    Not a failure and not a skip: the e2e suite reports it as its own verdict, ``unsupported``,
    with this message as the reason, and a run that has any is not a pass for the deployment gate.
    """


class Capability(StrEnum):
    """What a CE can do for the suite beyond the interface every CE has (start, wait, state, LAN host)."""

    DHCP_MAPE = "dhcp-mape"  # learns MAP-E from DHCPv6 option 94: renumbering, withdrawal, BR changes follow the lease
    RENEW = "renew"  # its DHCPv6 client can be told to RENEW now
    RESTART = "restart"  # its MAP-E software can be stopped (gracefully or killed) and started again
    GENERATION = "generation"  # it counts configuration applies: an unchanged renewal must not add one
    DHCP_COUNTERS = "dhcp-counters"  # it counts the DHCPv6 messages it sent
    FLAP_WAN = "flap-wan"  # its WAN link can be taken down and up
    RELOAD_RULES = "reload-rules"  # its NAT ruleset can be reloaded in place
    FAULTS = "faults"  # it can be broken on purpose (the tests of the tests)
    OS_BUILD = "os-build"  # it runs a kernel and userland mapelab built from a patch series (an OpenBSD image)


@dataclass(frozen=True)
class Capabilities:
    """The capabilities a CE has, and for every one it lacks, why (a profile, an OS, a patch)."""

    have: frozenset[Capability]
    why_not: Mapping[Capability, str] = field(default_factory=dict)

    @classmethod
    def of(cls, have: Iterable[Capability], why_not: Mapping[Capability, str] | None = None) -> Capabilities:
        have = frozenset(have)
        reasons = {c: (why_not or {}).get(c, "not implemented by this backend") for c in Capability if c not in have}
        return cls(have, reasons)

    def __contains__(self, cap: object) -> bool:
        return cap in self.have

    def reason(self, cap: Capability) -> str:
        return "" if cap in self.have else self.why_not.get(cap, "not implemented by this backend")

    def as_dict(self) -> dict[str, str | None]:
        return {c.value: (None if c in self.have else self.reason(c)) for c in Capability}


@dataclass(frozen=True)
class TunnelState:
    """The softwire as the CE's OS reports it (None: not configured, or the CE cannot tell)."""

    name: str | None = None
    mode: str | None = None  # ip6tnl, userspace, gif
    mtu: int | None = None
    mss: int | None = None  # the TCP MSS the CE clamps to
    local: IPv6Address | None = None
    remote: IPv6Address | None = None


@dataclass(frozen=True)
class LeaseState:
    """The DHCPv6 lease the CE holds, as it reports it."""

    prefix: IPv6Network | None = None
    t1: int | None = None
    t2: int | None = None
    preferred: int | None = None
    valid: int | None = None
    option94: tuple[str, ...] = ()  # the raw containers, hex
    discarded: tuple[str, ...] = ()  # containers the CE refused, with its reason


@dataclass(frozen=True)
class NatState:
    """The CE's NAT as its OS reports it: rule count, the port ranges NAT is confined to, counters by label."""

    rules: int = 0
    port_ranges: tuple[tuple[int, int], ...] | None = None  # None: unrestricted, or the CE cannot tell
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CeState:
    """A snapshot of one CE: what it says it did, and what its OS reports right now.

    Typed so the suite reads the same fields from every backend; a field a CE cannot report is
    None (never a made-up value), and a check that needs it must say unsupported, not pass.
    ``live`` keeps the OS's raw reports (``ip -j addr``, ``ifconfig``, ``pfctl -sr -v`` …) as
    evidence for the run record.
    """

    backend: str
    status: str  # starting, soliciting, provisioned, withdrawn, error, stopped, failed
    running: bool
    params: CeParams | None = None
    generation: int | None = None
    lease: LeaseState | None = None
    tunnel: TunnelState = field(default_factory=TunnelState)
    nat: NatState = field(default_factory=NatState)
    counters: Mapping[str, int] = field(default_factory=dict)
    events: tuple[Mapping[str, Any], ...] = ()
    errors: tuple[str, ...] = ()
    system: Mapping[str, str] = field(default_factory=dict)  # os, release, kernel: what the evidence ran on
    live: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_jsonable))


def _jsonable(v: object) -> object:
    if isinstance(v, frozenset | set | tuple):
        return list(v)
    return str(v)


@dataclass(frozen=True)
class Readiness:
    """Whether a backend can start now, or what must be built first (and the command that builds it)."""

    ready: bool
    detail: str


class CeDriver(ABC):
    """One CE attached to one testbed slot.  Subclasses implement the backend-specific steps."""

    #: registry name (``linux``, ``linux-vm``, ``openbsd``)
    name: ClassVar[str] = ""
    #: the testbed slot kind this backend attaches to: ``netns`` or ``vm`` (a VM backend needs
    #: the testbed brought up with every slot a VM slot: ``api.up(..., vm_slots=...)``)
    slot_kind: ClassVar[str] = "netns"

    def __init__(self) -> None:
        self.slot: CeSlot | None = None

    # -- what it is ---------------------------------------------------------------------------------

    @classmethod
    def image_ready(cls, **options: Any) -> Readiness:
        """Whether this backend can start without a long build first (an OS image), and what it uses.

        ``test-e2e --ce auto`` takes a backend only when it is ready; a backend that needs an
        image it cannot build by itself says which command builds it.
        """
        return Readiness(True, "needs no image")

    def capabilities(self) -> Capabilities:
        """What this CE can do for the suite; a check needing anything else reports unsupported."""
        return Capabilities.of(())

    def describe(self) -> dict[str, Any]:
        """What this CE is, for the run record: backend, profile, image, the software it runs and
        where that came from (an OpenBSD CE names its release, series and each patch's sha256)."""
        return {"backend": self.name}

    def limitations(self) -> dict[str, str]:
        """What this CE, correctly configured, still cannot do for its parameters (an id → the reason
        a check reports as unsupported), e.g. ``icmp-echo-ids-in-set`` where pf cannot confine echo ids."""
        return {}

    def usable_ports(self, proto: str) -> frozenset[int] | None:
        """The source ports this CE's NAT can hand out for ``proto`` (tcp, udp, icmp): its port set,
        minus what its OS never gives out (OpenBSD's reserved ports); None: the whole port set."""
        return None

    def require(self, cap: Capability, what: str) -> None:
        """Raise :class:`Unsupported` naming ``what`` needed ``cap`` and why this CE lacks it."""
        caps = self.capabilities()
        if cap not in caps:
            raise Unsupported(f"{what} needs {cap.value}, which the {self.name} CE lacks: {caps.reason(cap)}")

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
    def state(self) -> CeState:
        """A snapshot: what the CE says it did, plus what its OS reports right now."""

    @abstractmethod
    def teardown(self) -> None:
        """Stop the CE and leave nothing of it running.  Idempotent."""

    @abstractmethod
    def run_in_ce(self, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on the CE itself (dump a table, read a counter)."""

    def log_tail(self, lines: int = 15) -> str:
        """The CE's last log lines, for error messages and the run record."""
        return "(no log)"

    # -- capabilities (a backend overrides what it declares) ----------------------------------------

    def renew(self) -> None:
        """Make the CE's DHCPv6 client send RENEW now (rather than at T1)."""
        self.require(Capability.RENEW, "renew")

    def restart(self, *, graceful: bool = True) -> None:
        """Stop the CE's MAP-E software (RELEASE and withdraw when graceful, a kill otherwise) and start it again."""
        self.require(Capability.RESTART, "restart")

    def flap_wan(self, down_for: float = 2.0) -> None:
        """Take the WAN link down for ``down_for`` seconds, then up again."""
        self.require(Capability.FLAP_WAN, "flap-wan")

    def reload_rules(self) -> None:
        """Reload the NAT ruleset in place (as an admin's ``pfctl -f`` or ``nft -f`` would)."""
        self.require(Capability.RELOAD_RULES, "reload-rules")

    # -- the build it runs (an OS CE built from a patch series) --------------------------------------

    def verify_running_build(self) -> dict[str, Any]:
        """Prove the CE booted the kernel and userland mapelab built from its series (kern.version
        names that build); the evidence.  Raises :class:`CeError` when it runs something else."""
        self.require(Capability.OS_BUILD, "checking the running kernel is the patched build")
        raise NotImplementedError

    def verify_firewall_consumers(self) -> dict[str, Any]:
        """Start, load and query the firewall and every program the rebuild touched that talks to
        it (an ABI change shows as an ioctl error); the evidence per program."""
        self.require(Capability.OS_BUILD, "checking the firewall's consumers against the patched kernel")
        raise NotImplementedError

    def verify_rollback(self) -> dict[str, Any]:
        """Boot the release kernel and userland the build started from and load its ruleset; the evidence."""
        self.require(Capability.OS_BUILD, "rolling back to the release kernel and userland")
        raise NotImplementedError

    # -- common ---------------------------------------------------------------------------------------

    @property
    def slot_index(self) -> int:
        """The testbed slot this CE is attached to (1-based, as in ``testbed.lan_client``)."""
        return self._slot().index

    def lan_host(self) -> LanHost:
        slot = self._slot()
        return LanHost(slot.lan_netns, slot.lan_host, slot.lan_gateway, slot.lan_prefix)

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
