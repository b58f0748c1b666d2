"""ISC Kea 2.2 (Debian's kea-dhcp6-server) as the testbed's DHCPv6 server, configured from a scenario.

The configuration is generated from the scenario's mape objects, never typed by hand, so Kea
sends exactly what ``mapelab.mape`` says the ISP sends.  Two encodings of OPTION_S46_CONT_MAPE:

* **CSV** option-data (Kea's own S46 option definitions) when Kea can express the container:
  one rule, one BR, rules before the BR, no reserved flag bits.  The F flag is written as
  flags value 1: Kea's manual says 128, which on the wire sets the reserved high bit.
* **hex**: the whole container body from :func:`mapelab.mape.encode_container`, for everything
  else (several rules — Kea 2.2 keeps only the first CSV rule and shares one portparams space
  between rules —, the BR first, several BRs) or when the scenario asks for ``encoding = "hex"``.

Decision: the container is sent only when the client asks for it in its ORO (``always-send``
false).  That is RFC 7598's contract, what an ISP's server does, and it lets the e2e suite catch
a CE that forgets to request option 94.  ``always_send=True`` exists for debugging a CE.

Kea runs as the testbed's own process in the ISP namespace with its config, lease file,
control socket, PID file and log in the run directory — never the system service.  Lease
changes (renumber, withdraw, change of BR) rewrite the config (temporary name, then rename) and
send ``config-reload`` over the control socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from mapelab.files import atomic_write
from mapelab.mape import Container, Rule, encode_container
from mapelab.mape.codec import BorderRelay
from mapelab.scenario import Scenario

from .netns import ns_exec

KEA_BIN = Path("/usr/sbin/kea-dhcp6")


def kea_bin() -> Path:
    """Debian's kea-dhcp6, or ``$MAPELAB_KEA`` (a Kea installed elsewhere)."""
    return Path(os.environ.get("MAPELAB_KEA") or KEA_BIN)


class KeaError(RuntimeError):
    """Kea could not be configured, started or reloaded; the message says why and what to do."""


@dataclass(frozen=True)
class LeasePlan:
    """What the server hands out now: the scenario plus the on-demand changes applied to it."""

    scenario: Scenario
    pd_pool: IPv6Network
    brs: tuple[IPv6Address, ...]
    send_mape: bool = True
    always_send: bool = False

    @classmethod
    def of(cls, scenario: Scenario) -> LeasePlan:
        return cls(scenario, scenario.dhcp.pd_pool, scenario.brs)

    def container(self) -> Container:
        """The container as sent: the scenario's rules and order with this plan's BRs."""
        brs = tuple(BorderRelay(b) for b in self.brs)
        rules = self.scenario.rules
        return Container(94, brs + rules if self.scenario.br_first else rules + brs)


def csv_blockers(scenario: Scenario, brs: tuple[IPv6Address, ...] | None = None) -> list[str]:
    """Why Kea's CSV option-data cannot carry this container (empty: it can)."""
    why = []
    if len(scenario.rules) != 1:
        why.append(f"{len(scenario.rules)} rules (Kea 2.2 puts only the first CSV s46-rule on the wire)")
    if len(brs or scenario.brs) != 1:
        why.append(f"{len(brs or scenario.brs)} BRs")
    if scenario.br_first:
        why.append("the BR before the rules (Kea orders CSV sub-options itself)")
    for r in scenario.rules:
        if r.reserved_flags:
            why.append(f"reserved flag bits 0x{r.reserved_flags << 1:02x} in rule {r.ipv6_prefix}")
    return why


def encoding_for(scenario: Scenario, brs: tuple[IPv6Address, ...] | None = None) -> str:
    """``csv`` or ``hex``, honouring the scenario's ``encoding`` and failing when csv is impossible."""
    blockers = csv_blockers(scenario, brs)
    enc = scenario.dhcp.encoding
    if enc == "hex":
        return "hex"
    if enc == "csv" and blockers:
        raise KeaError(
            f"scenario {scenario.path}: encoding = \"csv\" but Kea cannot express this container as CSV: "
            + "; ".join(blockers)
            + ". Fix: set encoding = \"hex\" (or \"auto\") in its [dhcp] table"
        )
    if enc == "auto" and any(r.forwarding for r in scenario.rules):
        # CSV can carry F (as flags 1, see _csv_rule) but Kea documents it as 128; "auto" sidesteps
        # the quirk with hex. encoding = "csv" forces the CSV path, and a test checks its bytes.
        return "hex"
    return "hex" if blockers else "csv"


def _csv_rule(rule: Rule) -> list[dict[str, Any]]:
    flags = (rule.reserved_flags << 1) | int(rule.forwarding)  # F = 1, not Kea's documented 128
    data = f"{flags}, {rule.ea_len}, {rule.r}, {rule.ipv4_prefix.network_address}, {rule.ipv6_prefix}"
    out: list[dict[str, Any]] = [{"space": "s46-cont-mape-options", "name": "s46-rule", "data": data}]
    if rule.portparams is not None:
        pp = rule.portparams
        # Kea's "psid/len" is the right-aligned PSID; Kea left-aligns it on the wire.
        data = f"{pp.offset}, {pp.psid}/{pp.psid_len}"
        out.append({"space": "s46-rule-options", "name": "s46-portparams", "data": data})
    return out


def mape_option_data(plan: LeasePlan) -> list[dict[str, Any]]:
    """The option-data entries that make Kea send the plan's OPTION_S46_CONT_MAPE."""
    if not plan.send_mape:
        return []
    always = {"always-send": True} if plan.always_send else {}
    if encoding_for(plan.scenario, plan.brs) == "hex":
        body = encode_container(plan.container())[4:]
        return [{"code": 94, "space": "dhcp6", "csv-format": False, "data": body.hex().upper(), **always}]
    opts: list[dict[str, Any]] = [{"name": "s46-cont-mape", **always}]
    opts += _csv_rule(plan.scenario.rules[0])
    opts.append({"space": "s46-cont-mape-options", "name": "s46-br", "data": str(plan.brs[0])})
    return opts


def kea_config(plan: LeasePlan, *, interface: str, wan_subnet: IPv6Network, run_dir: Path) -> dict[str, Any]:
    """The whole kea-dhcp6 configuration for ``plan`` (pure: no I/O)."""
    dh = plan.scenario.dhcp
    base = int(wan_subnet.network_address)
    return {
        "Dhcp6": {
            "interfaces-config": {"interfaces": [interface]},
            "data-directory": str(run_dir),
            "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "6d6170656c6162", "persist": False},
            "control-socket": {"socket-type": "unix", "socket-name": str(run_dir / "kea.sock")},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": str(run_dir / "kea-leases6.csv"),
                "lfc-interval": 0,
            },
            "renew-timer": dh.t1,
            "rebind-timer": dh.t2,
            "preferred-lifetime": dh.preferred,
            "valid-lifetime": dh.valid,
            "subnet6": [
                {
                    "id": 1,
                    "subnet": str(wan_subnet),
                    "interface": interface,
                    # IA_NA for CEs that ask for a WAN address; prefixes come from the pd-pool.
                    "pools": [{"pool": f"{IPv6Address(base + 0x1000)}-{IPv6Address(base + 0x1FFF)}"}],
                    "pd-pools": [
                        {"prefix": str(plan.pd_pool.network_address), "prefix-len": plan.pd_pool.prefixlen,
                         "delegated-len": dh.delegated_len}
                    ],
                    "option-data": mape_option_data(plan),
                }
            ],
            "loggers": [
                {
                    "name": "kea-dhcp6",
                    "output_options": [{"output": str(run_dir / "kea.log"), "flush": True}],
                    "severity": "DEBUG",
                    "debuglevel": 40,
                }
            ],
        }
    }


class KeaServer:
    """One kea-dhcp6 process in the ISP namespace, driven through its files and control socket."""

    def __init__(self, netns: str, run_dir: Path, interface: str, wan_subnet: IPv6Network) -> None:
        self.netns = netns
        self.run_dir = run_dir
        self.interface = interface
        self.wan_subnet = wan_subnet
        self.conf = run_dir / "kea-dhcp6.json"
        self.sock = run_dir / "kea.sock"
        self.log = run_dir / "kea.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, plan: LeasePlan) -> None:
        cfg = kea_config(plan, interface=self.interface, wan_subnet=self.wan_subnet, run_dir=self.run_dir)
        atomic_write(self.conf, json.dumps(cfg, indent=2) + "\n")

    def start(self, plan: LeasePlan, timeout: float = 10.0) -> int:
        """Write the config, start Kea and wait until its control socket answers; returns the PID."""
        binary = kea_bin()
        if not binary.exists():
            raise KeaError(f"{binary} is missing. Fix: apt-get install kea-dhcp6-server (or set MAPELAB_KEA)")
        self.write(plan)
        env = {**os.environ, "KEA_PIDFILE_DIR": str(self.run_dir), "KEA_LOCKFILE_DIR": str(self.run_dir)}
        out = (self.run_dir / "kea.stdout").open("ab")
        self.proc = subprocess.Popen(
            ns_exec(self.netns, [str(binary), "-c", str(self.conf)]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        out.close()
        self.wait_ready(timeout)
        return self.proc.pid

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise KeaError(
                    f"kea-dhcp6 exited with status {self.proc.returncode} during start-up. "
                    f"See {self.log} and {self.run_dir / 'kea.stdout'}; the config is {self.conf}"
                )
            if self.sock.exists():
                try:
                    self.command("version-get", timeout=1.0)
                except (OSError, KeaError) as e:
                    last = str(e)
                else:
                    self._check_log()
                    return
            time.sleep(0.02)
        raise KeaError(f"kea-dhcp6 did not answer on {self.sock} within {timeout:.0f} s ({last}). See {self.log}")

    def _check_log(self) -> None:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for bad in ("DHCPSRV_OPEN_SOCKET_FAIL", "DHCP6_OPEN_SOCKET_FAIL", "DHCP6_CONFIG_LOAD_FAIL"):
            if bad in text:
                line = next(ln for ln in text.splitlines() if bad in ln)
                raise KeaError(f"kea-dhcp6 reports {bad}: {line.strip()} (log {self.log})")

    def command(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send one control command and return Kea's answer; result != 0 raises :class:`KeaError`."""
        req: dict[str, Any] = {"command": command}
        if arguments:
            req["arguments"] = arguments
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(json.dumps(req).encode())
            buf = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
                try:
                    answer = json.loads(buf)
                    break
                except ValueError:
                    continue
            else:  # pragma: no cover - loop only exits by break
                pass
        try:
            answer = json.loads(buf)
        except ValueError:
            raise KeaError(f"Kea answered {command!r} with unreadable {buf[:200]!r} (socket {self.sock})") from None
        if isinstance(answer, list):
            answer = answer[0]
        if answer.get("result", 1) != 0:
            raise KeaError(f"Kea refused {command!r}: {answer.get('text')} (config {self.conf}, log {self.log})")
        return answer

    def reload(self, plan: LeasePlan) -> None:
        """Rewrite the config for ``plan`` and make Kea load it without dropping its leases."""
        self.write(plan)
        self.command("config-reload")


def replace_plan(plan: LeasePlan, **changes: Any) -> LeasePlan:
    return replace(plan, **changes)
