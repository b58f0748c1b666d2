"""The process that owns a running testbed: builds it, keeps it, and tears it down.

Why a separate process: ``testbed.up`` returns while the testbed keeps running, so something
must own Kea, the BR, the internet's servers and the captures, answer router solicitations,
install routes for delegated prefixes and hold the run record's "owner" slot.  That is this
supervisor (``python -m mapelab.testbed.supervisor --run-dir DIR``), started detached by
:func:`mapelab.testbed.api.up`.  It tears everything down on SIGTERM, SIGINT or SIGHUP, on a
``down`` command, on an exception, and — when started with ``--watch-pid`` (test fixtures) —
when the process that asked for the testbed is gone.  If it is killed with SIGKILL, the next
run's sweep finds its record and removes what it left.

Commands arrive as one JSON line on ``DIR/supervisor.sock`` and are answered with one JSON
line (see :mod:`mapelab.testbed.api`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from mapelab import scenario as scenario_mod
from mapelab.errors import InputError
from mapelab.files import atomic_write as write_atomic
from mapelab.netio.dhcp6 import Dhcp6Error
from mapelab.scenario import Scenario

from . import netns as nn
from . import ra, topology
from .kea import KeaServer, LeasePlan
from .proc import ProcRef, kill
from .runs import RunRecord
from .status import TestbedStatus

PY = sys.executable
INET_PORTS = {"tcp_echo": 7, "tcp_bulk": 19, "udp_echo": 7}
RA_INTERVAL = 4.0


class TestbedError(RuntimeError):
    """The testbed could not do what was asked; the message says what, why and what to do."""

    __test__ = False  # not a pytest class despite the name


class TestbedInputError(TestbedError, InputError):
    """What was asked cannot work (a CE count the pool cannot serve, a slot outside the CEs, a pool
    that is not an IPv6 network): refused before anything starts; tasks exit 2."""

    __test__ = False


def scenario_toml(s: Scenario, brs: tuple[IPv6Address, ...], ces: int, pd_pool: IPv6Network | None = None) -> str:
    """The scenario as TOML again (with this run's BRs, CE count and pool): what the BR process reads."""
    dhcp = replace(s.dhcp, pd_pool=pd_pool or s.dhcp.pd_pool)
    return scenario_mod.to_toml(replace(s, brs=tuple(brs), ce_count=ces, dhcp=dhcp))


def renumber_pool(s: Scenario, current: IPv6Network) -> IPv6Network:
    """The next pool of the same size whose prefixes all still derive under the scenario's rules."""
    size = 1 << (128 - current.prefixlen)
    base = int(current.network_address)
    for step in (1, 2, 3, -1, -2, 4, 8):
        cand_int = base + step * size
        if not 0 <= cand_int < 1 << 128:
            continue
        cand = IPv6Network((cand_int, current.prefixlen))
        try:
            for p in cand.subnets(new_prefix=s.dhcp.delegated_len):
                s.derive(p)
        except Exception:
            continue
        return cand
    raise TestbedError(
        f"renumber: no pool of size /{current.prefixlen} near {current} lies inside the rules of scenario "
        f"{s.path} (rules: {', '.join(str(r.ipv6_prefix) for r in s.rules)}). Fix: pass an explicit pool "
        "inside a rule's IPv6 prefix, or use a scenario whose rule is wider than its pool"
    )


class Supervisor:
    def __init__(self, run_dir: Path, watch_pid: ProcRef | None) -> None:
        self.run_dir = run_dir
        self.rec = RunRecord.load(run_dir)
        self.watch = watch_pid
        d = self.rec.data
        self.scenario = scenario_mod.load(d["scenario_path"])
        self.lay = topology.Layout(d["prefix"], self.scenario, int(d["ces"]), frozenset(d.get("vm_slots", [])))
        self.want_br = bool(d.get("br", True))
        self.br_antispoof = bool(d.get("br_antispoof", True))
        self.want_pcap = bool(d.get("pcap", False))
        self.plan = LeasePlan.of(self.scenario)
        self.kea = KeaServer(self.lay.isp, run_dir, self.lay.wan_bridge, self.lay.wan_subnet)
        self.procs: dict[str, tuple[subprocess.Popen[bytes], ProcRef]] = {}
        self.stopping = False
        self.routes: dict[IPv6Network, IPv6Address] = {}
        self.br_dir = run_dir / "br"
        self.flows = run_dir / "inet-flows.jsonl"
        self.dhcp_server = "kea"
        self.events = run_dir / "events.log"
        self.ra_sock: socket.socket | None = None
        self.pd_sock: socket.socket | None = None
        self.ctl: socket.socket | None = None
        self.ra_bytes = b""
        self.wbr_index = 0
        self.timings: dict[str, float] = {}

    # -- helpers ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        with self.events.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S', time.gmtime())} {text}\n")

    def start_proc(self, name: str, argv: list[str], netns: str | None = None, env: dict[str, str] | None = None
                   ) -> subprocess.Popen[bytes]:
        cmd = nn.ns_exec(netns, argv) if netns else argv
        log = (self.run_dir / f"{name}.log").open("ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=topology_repo())
        log.close()
        ref = ProcRef.of(name, p.pid)
        self.procs[name] = (p, ref)
        self.rec.add_proc(ref)
        self.note(f"started {name} pid {p.pid}: {' '.join(cmd)}")
        return p

    def adopt(self, name: str, p: subprocess.Popen[bytes]) -> None:
        ref = ProcRef.of(name, p.pid)
        self.procs[name] = (p, ref)
        self.rec.add_proc(ref)

    def stop_proc(self, name: str, sig: int = signal.SIGTERM) -> None:
        entry = self.procs.pop(name, None)
        if entry is None:
            return
        p, ref = entry
        kill(ref, sig)
        with contextlib.suppress(Exception):
            p.wait(timeout=0.5)
        self.rec.drop_proc(ref)
        self.note(f"stopped {name} pid {ref.pid}")

    def timed(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 3)

    # -- bring-up --------------------------------------------------------------------------

    def up(self) -> None:
        t0 = time.monotonic()
        nn.set_log(self.run_dir / "commands.log")
        self.rec.update(owner=ProcRef.of("supervisor", os.getpid()).to_dict(), state="starting")
        self.open_control()
        topology.build(self.lay)
        self.assign_brs(self.plan.brs)
        self.write_scenario()
        self.timed("topology", t0)
        if self.want_pcap:
            self.start_pcaps()
        self.start_inet()
        self.wait_link_local()
        self.timed("link-local", t0)
        pid = self.kea.start(self.plan)
        assert self.kea.proc is not None
        self.adopt("kea", self.kea.proc)
        self.note(f"kea pid {pid} up, encoding {self.encoding()}")
        self.timed("kea", t0)
        self.start_router()
        self.wait_inet()
        self.timed("inet", t0)
        if self.want_br:
            self.start_br()
            self.timed("br", t0)
        self.write_status()
        self.timed("total", t0)
        self.rec.update(state="up", timings=self.timings)
        self.note(f"up in {self.timings['total']:.2f} s: {self.timings}")

    def encoding(self) -> str:
        from .kea import encoding_for

        return encoding_for(self.scenario, self.plan.brs) if self.plan.send_mape else "none"

    def wait_link_local(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if topology.link_local(self.lay.isp, self.lay.wan_bridge):
                return
            time.sleep(0.01)
        raise TestbedError(
            f"the ISP bridge {self.lay.wan_bridge} in {self.lay.isp} got no link-local address within {timeout} s; "
            "Kea cannot bind without it. Fix: check that a port of the bridge is up (`ip -n "
            f"{self.lay.isp} link`)"
        )

    def start_pcaps(self) -> None:
        links = [(self.lay.isp, self.lay.wan_bridge, "wan"), (self.lay.isp, self.lay.isp_inet_if, "isp-inet")]
        for i in range(1, self.lay.ces + 1):
            links.append((self.lay.lan_ns(i), self.lay.lan_host_if(i), f"lan{i}"))
        pdir = self.run_dir / "pcap"
        pdir.mkdir(exist_ok=True)
        for ns, ifname, label in links:
            argv = ["tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-Z", "root", "-i", ifname,
                    "-w", str(pdir / f"{label}.pcap")]
            self.start_proc(f"tcpdump-{label}", argv, netns=ns)
        # tcpdump says "listening on" once it captures: wait, so the first packets are not lost.
        deadline = time.monotonic() + 5
        for _ns, _ifname, label in links:
            log = self.run_dir / f"tcpdump-{label}.log"
            while "listening on" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise TestbedError(f"tcpdump on {label} did not start capturing within 5 s; see {log}")
                time.sleep(0.01)

    def start_inet(self) -> None:
        self.inet_ready = self.run_dir / "inet.ready"
        self.start_proc("inet", [PY, "-m", "mapelab.testbed.inet", "--flows", str(self.flows),
                                 "--ready", str(self.inet_ready)], netns=self.lay.inet)

    def wait_inet(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        p, _ = self.procs["inet"]
        while not self.inet_ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"the internet servers did not start; see {self.run_dir / 'inet.log'}")
            time.sleep(0.01)

    def br_args(self) -> list[str]:
        return [PY, "-m", "mapelab.testbed.br", "--scenario", str(self.run_dir / "scenario.toml"),
                "--tun", self.lay.tun, "--state-dir", str(self.br_dir), "--tunnel-mtu", str(self.scenario.tunnel_mtu),
                *([] if self.br_antispoof else ["--no-antispoof"])]

    def write_scenario(self) -> None:
        write_atomic(self.run_dir / "scenario.toml",
                     scenario_toml(self.scenario, self.plan.brs, self.lay.ces, self.plan.pd_pool))

    def start_br(self, timeout: float = 10.0) -> None:
        if importlib.util.find_spec("mapelab.testbed.br") is None or importlib.util.find_spec(
            "mapelab.testbed.br.__main__"
        ) is None:
            raise TestbedError(
                "the Border Relay module mapelab.testbed.br (with __main__) is not in this tree yet, so the "
                "testbed cannot route IPv4. Fix: bring the testbed up without it (`testbed.up --no-br`, "
                "api.up(..., br=False)) for DHCP-only work, or add the BR (issue 3)"
            )
        self.write_scenario()
        self.br_dir.mkdir(exist_ok=True)
        ready = self.br_dir / "br.ready"
        if ready.exists():
            ready.unlink()
        p = self.start_proc("br", self.br_args(), netns=self.lay.isp)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if p.poll() is not None:
                raise TestbedError(f"the BR exited with status {p.returncode} at start; see {self.run_dir / 'br.log'}")
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"the BR did not write {ready} within {timeout:.0f} s; see {self.run_dir / 'br.log'}"
                )
            time.sleep(0.01)
        nn.ip_batch([f"route replace {r.ipv4_prefix} dev {self.lay.tun}" for r in self.scenario.rules], self.lay.isp)

    def assign_brs(self, brs: tuple[IPv6Address, ...]) -> None:
        """The BR addresses live on the ISP's loopback: CEs reach them through the ISP's router address."""
        nn.ip_batch([f"addr replace {b}/128 dev lo" for b in brs], self.lay.isp)

    def start_router(self) -> None:
        with nn.entered(self.lay.isp):
            self.wbr_index = socket.if_nametoindex(self.lay.wan_bridge)
            self.ra_sock = ra.ra_socket(self.wbr_index)
            self.pd_sock = ra.pd_socket(self.wbr_index)
        out = nn.ip("-o", "link", "show", "dev", self.lay.wan_bridge, netns=self.lay.isp)
        mac = out.split("link/ether")[1].split()[0]
        self.ra_bytes = ra.build_ra(bytes.fromhex(mac.replace(":", "")), self.lay.wan_mtu, self.lay.wan_subnet)
        self.send_ra()

    def send_ra(self, dst: str = ra.ALL_NODES) -> None:
        if self.ra_sock is None:
            return
        try:
            ra.send_ra(self.ra_sock, self.ra_bytes, self.wbr_index, dst)
        except OSError as e:
            self.note(f"RA to {dst} failed: {e}")

    def open_control(self) -> None:
        path = self.run_dir / "supervisor.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(8)
        s.setblocking(False)
        self.ctl = s

    # -- status ----------------------------------------------------------------------------

    def status(self) -> TestbedStatus:
        lay = self.lay
        ll = topology.link_local(lay.isp, lay.wan_bridge)
        return TestbedStatus(
            run_id=str(self.rec.data["run_id"]),
            run_dir=self.run_dir,
            prefix=lay.prefix,
            scenario=self.scenario.name,
            isp_netns=lay.isp,
            inet_netns=lay.inet,
            br_address=self.plan.brs[0],
            inet_addresses=topology.INET_SERVICE,
            slots=lay.slots,
            access_netns=lay.access,
            extra={
                "scenario_path": str(self.scenario.path),
                "effective_scenario": str(self.run_dir / "scenario.toml"),  # with this run's BRs, pool, CEs
                "brs": [str(b) for b in self.plan.brs],
                "br_running": "br" in self.procs,
                "br_state_dir": str(self.br_dir),
                "tun": lay.tun,
                "tunnel_mtu": self.scenario.tunnel_mtu,
                "wan_bridge": lay.wan_bridge,
                "wan_subnet": str(lay.wan_subnet),
                "isp_wan_address": str(lay.isp_wan_address),
                "isp_link_local": str(ll) if ll else None,
                "pd_pool": str(self.plan.pd_pool),
                "delegated_len": self.scenario.dhcp.delegated_len,
                "dhcp_server": self.dhcp_server,
                "mape_option": self.encoding() if self.dhcp_server == "kea" else self.dhcp_server,  # responder, none
                "kea": {"config": str(self.kea.conf), "log": str(self.kea.log), "socket": str(self.kea.sock),
                        "leases": str(self.run_dir / "kea-leases6.csv")},
                "inet_flows": str(self.flows),
                "inet_ports": INET_PORTS,
                "delegations": {str(k): str(v) for k, v in self.routes.items()},
                "tap_namespace": "root" if lay.vm_slots else None,
                "supervisor_pid": os.getpid(),
                "processes": {name: ref.pid for name, (_p, ref) in self.procs.items()},
                "pcap_dir": str(self.run_dir / "pcap") if self.want_pcap else None,
                "timings": self.timings,
            },
        )

    def write_status(self) -> None:
        write_atomic(self.run_dir / "status.json", self.status().to_json() + "\n")

    # -- the running loop ------------------------------------------------------------------

    def loop(self) -> None:
        sel = selectors.DefaultSelector()
        assert self.ctl and self.ra_sock and self.pd_sock
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        sel.register(self.ra_sock, selectors.EVENT_READ, "rs")
        sel.register(self.pd_sock, selectors.EVENT_READ, "pd")
        next_ra = time.monotonic() + 0.5
        next_check = time.monotonic() + 0.5
        while not self.stopping:
            timeout = max(0.0, min(next_ra, next_check) - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.data == "ctl":
                    self.handle_control()
                elif key.data == "rs":
                    self.handle_rs()
                elif key.data == "pd":
                    self.handle_pd()
            now = time.monotonic()
            if now >= next_ra:
                self.send_ra()
                next_ra = now + RA_INTERVAL
            if now >= next_check:
                next_check = now + 0.5
                self.check_children()

    def check_children(self) -> None:
        if self.watch is not None and not self.watch.alive():
            self.note(f"the process that asked for this testbed (pid {self.watch.pid}) is gone: tearing down")
            self.stopping = True
        for name, (p, _ref) in list(self.procs.items()):
            if p.poll() is not None:
                self.note(f"{name} (pid {p.pid}) exited with status {p.returncode}")
                self.procs.pop(name)
                self.rec.update(procs=[x for x in self.rec.data.get("procs", []) if x["pid"] != p.pid],
                                died=[*self.rec.data.get("died", []), f"{name}:{p.returncode}"])
                with contextlib.suppress(Exception):
                    self.write_status()

    def handle_rs(self) -> None:
        assert self.ra_sock
        try:
            _data, addr = self.ra_sock.recvfrom(2048)
        except OSError:
            return
        src = addr[0].split("%")[0]
        self.send_ra(src if src != "::" else ra.ALL_NODES)

    def handle_pd(self) -> None:
        assert self.pd_sock
        for _ in range(64):
            try:
                frame = self.pd_sock.recv(65535)
            except BlockingIOError:
                return
            try:
                delegations = ra.parse_reply(frame)
            except Dhcp6Error as e:
                self.note(f"malformed DHCPv6 REPLY on the WAN bridge, no route taken from it: {e}")
                continue
            for d in delegations:
                self.delegation(d)

    def delegation(self, d: ra.Delegation) -> None:
        """Route a delegated prefix to the CE Kea gave it to (or drop the route when the lease ends).

        The log and the status claim a route only when ``ip`` said it worked: a failed install is
        logged as such and left unrecorded, so the next reply for the prefix tries again.
        """
        if d.valid == 0:
            if self.routes.pop(d.prefix, None) is not None:
                done = self._route("del", str(d.prefix))
                self.note(f"route {d.prefix} {'removed' if done is None else 'NOT removed: ' + done} "
                          f"(valid lifetime 0 to {d.client})")
        elif self.routes.get(d.prefix) != d.client:
            failed = self._route("replace", str(d.prefix), "via", str(d.client), "dev", self.lay.wan_bridge)
            if failed is not None:
                self.note(f"route {d.prefix} via {d.client} NOT installed: {failed}; the next reply for it tries again")
                return
            self.routes[d.prefix] = d.client
            self.note(f"route {d.prefix} via {d.client} installed")
        else:
            return
        self.write_status()

    def _route(self, *args: str) -> str | None:
        """``ip -6 route ARGS`` in the ISP namespace: None when it worked, else why not (one line)."""
        try:
            nn.ip("-6", "route", *args, netns=self.lay.isp)
        except nn.NetError as e:
            lines = str(e).splitlines()
            return next((x.removeprefix("stderr: ") for x in lines if x.startswith("stderr:")), lines[0])
        return None

    def handle_control(self) -> None:
        assert self.ctl
        try:
            conn, _ = self.ctl.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(5)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            try:
                req = json.loads(buf)
                answer = {"ok": True, **(self.command(req) or {})}
            except Exception as e:
                self.note(f"command {buf[:200]!r} failed: {e}")
                answer = {"ok": False, "error": str(e), "input_error": isinstance(e, InputError)}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer, default=str).encode() + b"\n")

    def command(self, req: dict[str, Any]) -> dict[str, Any] | None:
        cmd = req.get("cmd")
        self.note(f"command {req}")
        if cmd == "ping":
            return {"pid": os.getpid()}
        if cmd == "status":
            return {"status": json.loads(self.status().to_json())}
        if cmd == "down":
            self.stopping = True
            return None
        if cmd == "renumber":
            try:
                pool = IPv6Network(req["pool"]) if req.get("pool") else renumber_pool(self.scenario, self.plan.pd_pool)
            except ValueError as e:
                raise TestbedInputError(f"renumber: pool {req['pool']!r}: {e}") from None
            dlen = self.scenario.dhcp.delegated_len
            if pool.prefixlen > dlen:
                raise TestbedInputError(f"renumber: pool {pool} is longer than the delegated length /{dlen}; "
                                        f"give a pool of /{dlen} or shorter")
            self.plan = replace(self.plan, pd_pool=pool)
            self.apply_plan()  # the BR works on rules, not on the pool: it keeps running
            return {"pd_pool": str(pool)}
        if cmd == "withdraw":
            self.plan = replace(self.plan, send_mape=False)
            self.apply_plan()
            return None
        if cmd == "restore":
            self.plan = replace(self.plan, send_mape=True)
            self.apply_plan()
            return None
        if cmd == "change-br":
            try:
                new = tuple(IPv6Address(b) for b in req.get("brs") or []) or (IPv6Address(int(self.plan.brs[0]) + 1),)
            except ValueError as e:
                raise TestbedInputError(f"change-br: {e}") from None
            old = self.plan.brs
            self.plan = replace(self.plan, brs=new)
            self.assign_brs(new)
            self.apply_plan(restart_br=self.want_br)
            for b in old:
                if b not in new:
                    nn.ip("addr", "del", f"{b}/128", "dev", "lo", netns=self.lay.isp, check=False)
            return {"brs": [str(b) for b in new]}
        if cmd == "responder":
            return self.use_responder(req)
        if cmd == "silence":  # no DHCPv6 server at all: leases run out (T1, T2, expiry) until kea/responder
            self.stop_proc("kea")
            self.stop_proc("responder")
            self.dhcp_server = "none"
            self.write_status()
            return None
        if cmd == "kea":
            self.stop_proc("responder")
            pid = self.kea.start(self.plan)
            assert self.kea.proc is not None
            self.adopt("kea", self.kea.proc)
            self.dhcp_server = "kea"
            self.write_status()
            return {"pid": pid}
        if cmd == "dump":
            return {"path": str(self.dump_state(req.get("reason", "asked")))}
        raise TestbedError(f"unknown command {cmd!r}: use ping, status, down, renumber, withdraw, restore, "
                           "change-br, responder, kea, silence or dump")

    def apply_plan(self, restart_br: bool = False) -> None:
        """Make Kea (and, when the BR's view changed, the BR) serve ``self.plan``."""
        if self.dhcp_server == "kea":
            self.kea.reload(self.plan)
        self.write_scenario()
        if restart_br:
            self.stop_proc("br")
            self.start_br()
        self.write_status()

    def use_responder(self, req: dict[str, Any]) -> dict[str, Any]:
        """Replace Kea by mapelab's own responder that sends the given (possibly broken) bytes."""
        self.stop_proc("kea")
        self.stop_proc("responder")
        args = [PY, "-m", "mapelab.testbed.responder", "--iface", self.lay.wan_bridge,
                "--pd-pool", str(self.plan.pd_pool), "--delegated-len", str(self.scenario.dhcp.delegated_len),
                "--ready", str(self.run_dir / "responder.ready")]
        d = self.scenario.dhcp
        args += ["--timers", f"{d.t1},{d.t2},{d.preferred},{d.valid}"]
        if req.get("option_hex") is not None:
            args += ["--option-hex", req["option_hex"]]
        ready = self.run_dir / "responder.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        p = self.start_proc("responder", args, netns=self.lay.isp)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise TestbedError(f"the DHCPv6 responder did not start; see {self.run_dir / 'responder.log'}")
            time.sleep(0.02)
        self.dhcp_server = "responder"
        self.write_status()
        return {"pid": p.pid}

    # -- teardown --------------------------------------------------------------------------

    def dump_state(self, reason: str) -> Path:
        """ip addr/route/nft of every namespace of the run, for a failed run's post-mortem."""
        out = self.run_dir / "state-dump.txt"
        parts = [f"# state dump: {reason} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC\n"]
        for ns in topology.owned_namespaces(self.lay.prefix):
            for cmd in (["ip", "-n", ns, "addr"], ["ip", "-n", ns, "route"], ["ip", "-n", ns, "-6", "route"],
                        ["ip", "-n", ns, "neigh"], ["ip", "netns", "exec", ns, "nft", "list", "ruleset"]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                parts.append(f"\n## {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        out.write_text("".join(parts))
        return out

    def teardown(self) -> None:
        for name in list(self.procs):
            self.stop_proc(name)
        # Processes others started in our namespaces (a CE backend that did not tear down) keep a
        # deleted namespace alive, invisible: name them so their owner can be found.  Not ours to kill.
        for ns in topology.owned_namespaces(self.lay.prefix):
            pids = nn.run(["ip", "netns", "pids", ns], check=False).split()
            if pids:
                self.note(f"warning: processes not started by the testbed are still in {ns}: {' '.join(pids)} "
                          "(their owner must stop them; the namespace is removed from /run/netns anyway)")
        for s in (self.ra_sock, self.pd_sock, self.ctl):
            if s is not None:
                s.close()
        removed = topology.destroy(self.lay.prefix)
        self.note("removed " + ", ".join(removed))
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "supervisor.sock").unlink()


def topology_repo() -> str:
    """Children run from the repository root so ``python -m mapelab...`` imports this tree."""
    return str(Path(__file__).resolve().parents[2])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--watch-pid", type=int, default=None, help="tear down when this process is gone")
    args = ap.parse_args(argv)
    watch = ProcRef.of("watched", args.watch_pid) if args.watch_pid else None
    sup = Supervisor(args.run_dir.resolve(), watch)

    def on_signal(signum: int, _frame: Any) -> None:
        sup.note(f"signal {signal.Signals(signum).name}: tearing down")
        sup.stopping = True
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    final = "down"
    try:
        sup.up()
        sup.loop()
    except KeyboardInterrupt:
        pass
    except Exception as e:
        final = "failed"
        msg = str(e) if isinstance(e, (TestbedError, nn.NetError)) or "Error" in type(e).__name__ else repr(e)
        sup.note(f"failed: {msg}\n{traceback.format_exc()}")
        with contextlib.suppress(Exception):
            sup.dump_state(f"failure: {msg}")
        sup.rec.update(error=msg)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            sup.teardown()
        finally:
            sup.rec.update(state=final, ended_at=time.time())
    return 0 if final == "down" else 1


if __name__ == "__main__":
    sys.exit(main())
