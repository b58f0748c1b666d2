"""`invoke testbed.*`: bring the simulated ISP up and down, look at it, and change its leases."""

from __future__ import annotations

import json as json_mod
import os
import time

from invoke import Collection, task
from invoke.exceptions import Exit

from mapelab import runs
from mapelab.scenario import MAX_CES
from mapelab.testbed import api

from ._guard import BadInput, Int, IntList, Ipv6List, Ipv6Net, Name, ScenarioFile, guarded

RUN = Name(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}", "a run id (a directory name under runs/, e.g. 20261201-101500-ab12)")
NODE = Name(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", "a node name: isp, inet, ce1, lan1, … or a namespace of the run")


def _current(run: str | None) -> api.Testbed:
    """The run named ``run`` (an id under runs/), else the single running one, else runs/latest-testbed.

    Only testbed runs: an e2e run's directory (runs/e2e-…) holds no run.json and is refused by name.
    """
    if run:
        path = api.runs_root() / run
        kind = runs.run_kind(path)
        if kind != "testbed":
            what = f"is an {kind} run, not a testbed run" if kind else f"is not a run under {api.runs_root()}"
            raise BadInput(f"--run {run!r} {what}; `ls {api.runs_root()}` lists them (testbed runs hold run.json)")
        return api.Testbed(path)
    live = api.running()
    if len(live) > 1:
        names = ", ".join(t.run_dir.name for t in live)
        raise BadInput(f"several testbeds are up ({names}); pick one with --run ID")
    if live:
        return live[0]
    return api.latest()  # runs/latest-testbed, checked to be a testbed run


@task(
    help={
        "scenario": "scenario name (scenarios/NAME.toml) or a TOML file; default cosmote-like",
        "ces": f"number of CE slots, 1..{MAX_CES} (default: the scenario's [ces] count)",
        "vm_slots": "comma-separated slot numbers that get TAPs for VM CEs instead of namespaces, e.g. 1,2",
        "pcap": "capture every link with tcpdump into <run dir>/pcap/",
        "br": "start the Border Relay (default on; --no-br for DHCP-only work)",
    }
)
@guarded(scenario=ScenarioFile(), ces=Int(1, MAX_CES), vm_slots=IntList(1, MAX_CES))
def up(c, scenario="cosmote-like", ces=None, vm_slots=None, pcap=False, br=True):
    """Bring a testbed up for a scenario and leave it running (until `invoke testbed.down`).

    Checks the scenario and the CE slots first (bad input: one line, exit 2, nothing started),
    sweeps what killed runs left, then prints the run directory, the time it took and the status.
    """
    t0 = time.monotonic()
    tb = api.up(scenario, ces=ces, vm_slots=vm_slots, pcap=pcap, br=br, attach=False)
    dt = time.monotonic() - t0
    print(f"testbed {tb.run_dir.name} up in {dt:.2f} s (run directory {tb.run_dir})")
    _print_status(tb)


@task(help={"run": "run id (default: the running testbed)"})
@guarded(run=RUN)
def down(c, run=None):
    """Tear a testbed down: stop its processes, delete its namespaces and links."""
    tb = _current(run)
    print(tb.down())


def _print_status(tb: api.Testbed) -> None:
    st = tb.status
    x = st.extra
    state = tb.record.state
    print(f"run {st.run_id}  prefix {st.prefix}  scenario {st.scenario}  state {state}")
    if state != "up":
        print(f"  (not running: what follows is the last status it wrote; {tb.run_dir} keeps its logs)")
    running = " (running)" if state == "up" else " (was running)"
    print(f"  ISP {st.isp_netns}: BR {', '.join(x.get('brs', [str(st.br_address)]))}"
          f"{running if x.get('br_running') else ' (not started)'}, DHCPv6 {x.get('dhcp_server')} "
          f"(option 94: {x.get('mape_option')}), pool {x.get('pd_pool')}, delegating /{x.get('delegated_len')}")
    print(f"  internet {st.inet_netns}: {', '.join(map(str, st.inet_addresses))} "
          f"(TCP echo 7, bulk 19, UDP echo 7, ping); flows in {x.get('inet_flows')}")
    for s in st.slots:
        where = f"netns {s.ce_netns} WAN {s.wan_if} LAN {s.lan_if}" if s.kind == "netns" else \
            f"VM TAPs WAN {s.wan_tap} LAN {s.lan_tap} (root namespace)"
        print(f"  CE{s.index}: {where}; LAN host {s.lan_netns} {s.lan_host} via {s.lan_gateway}; MTU {s.wan_mtu}")
    for prefix, via in (x.get("delegations") or {}).items():
        print(f"  delegated {prefix} → {via}")


@task(help={"json": "print the TestbedStatus JSON (the CE backends' contract)", "run": "run id"})
@guarded(run=RUN)
def status(c, json=False, run=None):
    """Show the running testbed (else the newest testbed run): namespaces, CE slots, BR, internet, delegations."""
    tb = _current(run)
    if not (tb.run_dir / "status.json").exists():
        raise Exit(f"testbed.status: run {tb.run_dir.name} is {tb.record.state} and never wrote status.json"
                   f"{': ' + tb.record.data['error'] if tb.record.data.get('error') else ''}", code=1)
    if json:
        # Exactly a TestbedStatus (TestbedStatus.from_json reads it); the run's state goes in extra.
        d = json_mod.loads(tb.status.to_json())
        d["extra"]["state"] = tb.record.state
        print(json_mod.dumps(d, indent=2))
    else:
        _print_status(tb)


@task(help={"node": "isp, inet, ce1, lan1, … (or a namespace name)", "run": "run id"})
@guarded(node=NODE, run=RUN)
def shell(c, node, run=None):
    """Open a shell inside a node of the running testbed."""
    argv = _current(run).shell_argv(node)
    os.execvp(argv[0], argv)


@task(help={"pool": "the new delegated-prefix pool, e.g. 2001:db8:12:3500::/56 (default: the next block that "
                    "still derives)",
            "run": "run id"})
@guarded(pool=Ipv6Net(), run=RUN)
def renumber(c, pool=None, run=None):
    """Hand out new delegated prefixes: CEs get them at their next renew or rebind."""
    print(f"pd-pool is now {_current(run).renumber(pool)}; CEs move at their next renew/rebind")


@task(help={"restore": "send option 94 again instead", "run": "run id"})
@guarded(run=RUN)
def withdraw(c, restore=False, run=None):
    """Stop (or, with --restore, resume) sending the MAP-E container (option 94)."""
    tb = _current(run)
    tb.restore() if restore else tb.withdraw()
    print("option 94 " + ("restored" if restore else "withdrawn") + " from the next DHCPv6 reply on")


@task(name="change-br", help={"br": "new BR address(es), comma-separated (default: the current one + 1)",
                               "run": "run id"})
@guarded(br=Ipv6List(), run=RUN)
def change_br(c, br=None, run=None):
    """Move the BR to another address and hand that address out in option 94."""
    print("BR now at " + ", ".join(_current(run).change_br(*br)))


collection = Collection("testbed", up, down, status, shell, renumber, withdraw, change_br)
