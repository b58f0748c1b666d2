"""The testbed as a Python API: what tasks, test fixtures and CE backends call.

::

    from mapelab.testbed import api
    tb = api.up("cosmote-like", ces=2)          # sweeps stale runs, starts a supervisor, waits
    try:
        st = tb.status                          # a TestbedStatus (also <run dir>/status.json)
        tb.renumber(); tb.withdraw(); tb.change_br("2001:db8:ffff::2"); tb.silence(); tb.use_kea()
        res = tb.lan_client(1, "tcp", count=4)  # JSON of what each flow did
        seen = tb.flows(proto="tcp")            # what the internet recorded
    finally:
        tb.down()

``up(..., attach=True)`` (the default for fixtures) ties the testbed to the calling process:
if the caller dies, the supervisor tears down by itself.  ``attach=False`` is what
``invoke testbed.up`` uses: the testbed runs until ``testbed.down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapelab import scenario as scenario_mod
from mapelab.mape import MapeError
from mapelab.runs import RunLookupError, set_latest
from mapelab.runs import latest as latest_run

from .proc import ProcRef, kill
from .runs import FINISHED, RunRecord, new_run, runs_root, sweep
from .status import TestbedStatus
from .supervisor import TestbedError, TestbedInputError

UP_TIMEOUT = 30.0


def preflight() -> list[str]:
    """What is missing to run a testbed here (empty: nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_NET_ADMIN): run as root")
    from .kea import kea_bin

    for binary in (str(kea_bin()), "/usr/sbin/ip", "/usr/sbin/nft"):
        if not Path(binary).exists() and not Path("/bin", Path(binary).name).exists():
            missing.append(f"{binary} (apt-get install kea-dhcp6-server iproute2 nftables)")
    return missing


@dataclass
class Testbed:
    """A handle on one running testbed (its run directory and supervisor)."""

    run_dir: Path

    @property
    def record(self) -> RunRecord:
        return RunRecord.load(self.run_dir)

    @property
    def status(self) -> TestbedStatus:
        return TestbedStatus.from_json((self.run_dir / "status.json").read_text())

    # -- control ---------------------------------------------------------------------------

    def command(self, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """One command to the supervisor; raises TestbedError with its reason when it fails."""
        path = self.run_dir / "supervisor.sock"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise TestbedError(
                f"testbed {self.run_dir.name}: cannot reach its supervisor at {path} ({e}). "
                "Is it still up? `invoke testbed.status` shows it"
            ) from None
        if cmd == "down" and not buf:
            return {"ok": True}
        answer = json.loads(buf)
        if not answer.get("ok"):
            cls = TestbedInputError if answer.get("input_error") else TestbedError
            raise cls(f"testbed {self.run_dir.name}: {cmd} failed: {answer.get('error')}")
        return answer

    def renumber(self, pool: str | None = None) -> str:
        """Move the delegated-prefix pool (default: the next block that still derives): CEs get a new
        prefix at their next renew or rebind.  Returns the new pool."""
        return str(self.command("renumber", pool=pool)["pd_pool"])

    def withdraw(self) -> None:
        """Stop sending OPTION_S46_CONT_MAPE (from the next reply on)."""
        self.command("withdraw")

    def restore(self) -> None:
        """Send OPTION_S46_CONT_MAPE again after :meth:`withdraw`."""
        self.command("restore")

    def change_br(self, *brs: str) -> list[str]:
        """Hand out other BR address(es) (default: the current one + 1) and move the BR to them."""
        return list(self.command("change-br", brs=list(brs))["brs"])

    def use_responder(self, option_hex: str | None) -> None:
        """Replace Kea by mapelab's responder sending ``option_hex`` (a whole option 94, header included,
        possibly malformed; None: no option 94).  See :mod:`mapelab.testbed.responder`."""
        self.command("responder", option_hex=option_hex)

    def use_kea(self) -> None:
        """Serve with Kea again (after :meth:`use_responder` or :meth:`silence`), with the current plan."""
        self.command("kea")

    def silence(self) -> None:
        """Stop the DHCPv6 server (Kea or the responder): nothing answers SOLICIT, RENEW or REBIND, so a
        CE's lease runs through T1, T2 and expiry.  :meth:`use_kea` (or :meth:`use_responder`) ends it."""
        self.command("silence")

    def dump_state(self, reason: str = "asked") -> Path:
        return Path(self.command("dump", reason=reason)["path"])

    # -- traffic ---------------------------------------------------------------------------

    def lan_client(self, slot: int, mode: str, *, target: str | None = None, count: int = 1,
                   size: int = 1 << 20, timeout: float = 10.0, extra: list[str] | None = None) -> dict[str, Any]:
        """Run :mod:`mapelab.testbed.lanclient` in LAN host ``slot`` and return its JSON report."""
        st = self.status
        lan = next(s for s in st.slots if s.index == slot).lan_netns
        target = target or str(st.inet_addresses[0])
        argv = ["ip", "netns", "exec", lan, sys.executable, "-m", "mapelab.testbed.lanclient", mode,
                "--target", target, "--count", str(count), "--size", str(size), "--timeout", str(timeout),
                *(extra or [])]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * max(count, 1) + 30,
                           cwd=str(Path(__file__).resolve().parents[2]))
        if p.returncode not in (0, 1):
            raise TestbedError(f"lanclient in {lan} failed (exit {p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout)

    def inject(self, *, src: str, dst: str, inner_src: str, inner_dst: str, sport: int, dport: int = 7,
               count: int = 1) -> str:
        """Send hand-made MAP-E UDP packets (IPv4 in IPv6) from the access network, as a lying CE
        would: outer ``src`` (any address, typically a CE's MAP address) → ``dst`` (a BR).

        From the testbed side, so a CE under test needs nothing installed (OpenBSD has no python3)."""
        st = self.status
        if not st.access_netns:
            raise TestbedError(f"testbed {self.run_dir.name} has no access-network host (made by an older mapelab); "
                               "bring it up again")
        argv = ["ip", "netns", "exec", st.access_netns, sys.executable, "-m", "mapelab.testbed.inject",
                "--src", src, "--dst", dst, "--inner-src", inner_src, "--inner-dst", inner_dst,
                "--sport", str(sport), "--dport", str(dport), "--count", str(count)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           cwd=str(Path(__file__).resolve().parents[2]))
        if p.returncode != 0:
            raise TestbedError(f"injecting from {st.access_netns} failed (exit {p.returncode}): "
                               f"{p.stderr.strip()[-300:]}")
        return p.stdout.strip()

    def flows(self, **match: Any) -> list[dict[str, Any]]:
        """The internet's flow records (``proto="tcp"``, ``src=...`` filter by equality)."""
        path = self.run_dir / "inet-flows.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if all(rec.get(k) == v for k, v in match.items()):
                out.append(rec)
        return out

    def delegations(self) -> dict[str, str]:
        """Delegated prefix → the CE link-local the ISP routes it to (learned from Kea's replies)."""
        return dict(self.status.extra.get("delegations") or {})

    def wait_delegated(self, prefix: str, timeout: float = 10.0) -> str:
        """Wait until the ISP routes ``prefix`` to a CE (the BR can reach its MAP address); its next hop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            via = self.delegations().get(str(prefix))
            if via:
                return via
            time.sleep(0.05)
        raise TestbedError(f"no route for {prefix} after {timeout} s; delegations now {self.delegations()} "
                           f"(see {self.run_dir / 'events.log'} and {self.run_dir / 'kea.log'})")

    def shell_argv(self, node: str) -> list[str]:
        """argv for a shell in ``node`` (isp, inet, ceN, lanN, or a full namespace name)."""
        st = self.status
        names = {"isp": st.isp_netns, "inet": st.inet_netns}
        for s in st.slots:
            if s.ce_netns:
                names[f"ce{s.index}"] = s.ce_netns
            names[f"lan{s.index}"] = s.lan_netns
        ns = names.get(node, node if node.startswith(st.prefix) else None)
        if ns is None:
            raise TestbedInputError(f"no node {node!r} in run {st.run_id}; nodes: {', '.join(names)}")
        return ["ip", "netns", "exec", ns, os.environ.get("SHELL", "/bin/bash")]

    # -- teardown --------------------------------------------------------------------------

    def down(self, timeout: float = 15.0) -> str:
        """Stop the testbed: ask the supervisor, wait; if it does not go, remove the run like the sweep."""
        rec = self.record
        if rec.state in FINISHED:
            return f"run {self.run_dir.name} is already {rec.state}"
        owner = rec.owner
        if owner is not None and owner.alive():
            with contextlib.suppress(TestbedError):
                self.command("down", timeout=5)
            deadline = time.monotonic() + timeout
            while owner.alive() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(owner.pid, os.WNOHANG)
                time.sleep(0.02)
            if owner.alive():
                kill(owner, signal.SIGTERM, grace=5)
        if self.record.state not in FINISHED:
            sweep(self.run_dir.parent)
        return f"run {self.run_dir.name} is {self.record.state}"


def check_request(scenario: str | Path, ces: int | None = None,
                  vm_slots: tuple[int, ...] = ()) -> scenario_mod.Scenario:
    """The scenario, loaded and checked, once the CE count and VM slots are known to fit it.

    Bad input (:class:`~mapelab.scenario.ScenarioError`, :class:`TestbedInputError`) is refused
    here, before anything starts: ``invoke testbed.up`` exits 2 on it.
    """
    scn = scenario_mod.load(scenario)
    n = ces if ces is not None else scn.ce_count
    if not 1 <= n <= scenario_mod.MAX_CES:
        raise TestbedInputError(f"ces = {n}: use 1..{scenario_mod.MAX_CES} CE slots")
    prefixes = scn.delegated_prefixes(n)
    if len(prefixes) < n:
        raise TestbedInputError(f"ces = {n} but scenario {scn.path} has a pool of {len(prefixes)} prefix(es); "
                                "use fewer CEs or a wider [dhcp] pd_pool")
    for p in prefixes[scn.ce_count:]:  # load() checked the scenario's own CEs
        try:
            if not len(scn.derive(p).port_set):
                raise TestbedInputError(f"ces = {n}: CE prefix {p} of scenario {scn.path} gets "
                                        f"{scenario_mod.no_usable_ports(scn.derive(p).port_set)}")
        except MapeError as e:
            raise TestbedInputError(f"ces = {n}: CE prefix {p} of scenario {scn.path} cannot be derived: {e}; "
                                    "use fewer CEs") from None
    bad = [i for i in vm_slots if not 1 <= i <= n]
    if bad:
        raise TestbedInputError(f"vm slots {bad} are outside 1..{n}; use --vm-slots within the CE count")
    return scn


def up(scenario: str | Path = "cosmote-like", *, ces: int | None = None, vm_slots: tuple[int, ...] = (),
       pcap: bool = False, br: bool = True, br_antispoof: bool = True, attach: bool = True,
       log: Any = print) -> Testbed:
    """Bring a testbed up and return its handle once ``status.json`` is written.

    ``br_antispoof=False`` starts a BR without RFC 7597 §8.1's source check: only for proving that
    the e2e suite's anti-spoofing test can fail.  Sweeps stale runs first (and says so through ``log``).
    Raises :class:`TestbedError` with the supervisor's reason and the run directory when the testbed
    cannot come up.
    """
    scn = check_request(scenario, ces, vm_slots)
    n = ces if ces is not None else scn.ce_count
    missing = preflight()
    if missing:
        raise TestbedError("cannot run a testbed here; missing: " + "; ".join(missing))
    sweep(log=log)
    run_id, prefix, run_dir = new_run()
    rec = RunRecord(run_dir / "run.json", {
        "kind": "testbed", "run_id": run_id, "prefix": prefix, "scenario": scn.name, "scenario_path": str(scn.path),
        "ces": n,
        "vm_slots": sorted(vm_slots), "pcap": pcap, "br": br, "br_antispoof": br_antispoof, "state": "starting",
        "owner": ProcRef.of("caller", os.getpid()).to_dict(), "procs": [], "created_at": time.time(),
    })
    rec.save()
    set_latest(run_dir, "testbed")
    argv = [sys.executable, "-m", "mapelab.testbed.supervisor", "--run-dir", str(run_dir)]
    if attach:
        argv += ["--watch-pid", str(os.getpid())]
    with (run_dir / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
    tb = Testbed(run_dir)
    deadline = time.monotonic() + UP_TIMEOUT
    try:
        while True:
            state = tb.record.state
            if state == "up":
                return tb
            if state in FINISHED or proc.poll() is not None:
                proc.wait(timeout=10)
                err = tb.record.data.get("error") or f"the supervisor exited with status {proc.returncode}"
                raise TestbedError(f"testbed {run_id} did not come up: {err}\n(run directory {run_dir}: "
                                   "supervisor.log, events.log, state-dump.txt)")
            if time.monotonic() > deadline:
                raise TestbedError(f"testbed {run_id} not up after {UP_TIMEOUT:.0f} s; see {run_dir}/events.log")
            time.sleep(0.01)
    except BaseException:
        tb.down()
        raise


def latest() -> Testbed:
    """The most recent testbed run (``runs/latest-testbed``), whatever its state; never an e2e run."""
    try:
        return Testbed(latest_run("testbed"))
    except RunLookupError as e:
        raise TestbedError(str(e)) from None


def running() -> list[Testbed]:
    """Runs whose record says up and whose supervisor is alive."""
    out = []
    for rec_path in sorted(runs_root().glob("*/run.json")):
        if rec_path.parent.is_symlink():
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            rec = RunRecord.load(rec_path.parent)
            if rec.state == "up" and rec.owner and rec.owner.alive():
                out.append(Testbed(rec_path.parent))
    return out


@contextlib.contextmanager
def testbed(scenario: str | Path = "cosmote-like", **kw: Any) -> Iterator[Testbed]:
    """``with testbed("cosmote-like") as tb:`` — up, yield, and always down."""
    tb = up(scenario, **kw)
    try:
        yield tb
    finally:
        tb.down()
