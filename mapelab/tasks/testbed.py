"""`invoke testbed.*`: bring the simulated ISP up and down, look at it, and change its leases."""

from __future__ import annotations

import json as json_mod
import os
import time

from invoke import Collection, task
from invoke.exceptions import Exit

from mapelab.scenario import ScenarioError
from mapelab.testbed import api
from mapelab.testbed.supervisor import TestbedError


def _current(run: str | None) -> api.Testbed:
    """The run named ``run`` (an id under runs/), else the single running one, else runs/latest."""
    if run:
        path = api.runs_root() / run
        if not (path / "run.json").exists():
            raise Exit(f"testbed: no run {run!r} under {api.runs_root()}; `ls {api.runs_root()}` lists them", code=2)
        return api.Testbed(path)
    live = api.running()
    if len(live) > 1:
        names = ", ".join(t.run_dir.name for t in live)
        raise Exit(f"testbed: several testbeds are up ({names}); pick one with --run ID", code=2)
    if live:
        return live[0]
    try:
        return api.latest()
    except TestbedError as e:
        raise Exit(f"testbed: {e}", code=2) from None


def _fail(e: Exception) -> Exit:
    return Exit(f"testbed: {e}", code=1)


@task(
    help={
        "scenario": "scenario name (scenarios/NAME.toml) or a TOML file; default cosmote-like",
        "ces": "number of CE slots (default: the scenario's [ces] count)",
        "vm_slots": "comma-separated slot numbers that get TAPs for VM CEs instead of namespaces, e.g. 1,2",
        "pcap": "capture every link with tcpdump into <run dir>/pcap/",
        "br": "start the Border Relay (default on; --no-br for DHCP-only work)",
    }
)
def up(c, scenario="cosmote-like", ces=None, vm_slots="", pcap=False, br=True):
    """Bring a testbed up for a scenario and leave it running (until `invoke testbed.down`).

    Sweeps what killed runs left first, then prints the run directory, the time it took and
    the status summary.
    """
    slots = tuple(int(x) for x in vm_slots.split(",") if x.strip()) if vm_slots else ()
    t0 = time.monotonic()
    try:
        tb = api.up(scenario, ces=int(ces) if ces is not None else None, vm_slots=slots, pcap=pcap, br=br,
                    attach=False)
    except (TestbedError, ScenarioError, ValueError) as e:
        raise _fail(e) from None
    dt = time.monotonic() - t0
    print(f"testbed {tb.run_dir.name} up in {dt:.2f} s (run directory {tb.run_dir})")
    _print_status(tb)


@task(help={"run": "run id (default: the running testbed)"})
def down(c, run=None):
    """Tear a testbed down: stop its processes, delete its namespaces and links."""
    tb = _current(run)
    print(tb.down())


def _print_status(tb: api.Testbed) -> None:
    st = tb.status
    x = st.extra
    print(f"run {st.run_id}  prefix {st.prefix}  scenario {st.scenario}  state {tb.record.state}")
    print(f"  ISP {st.isp_netns}: BR {', '.join(x.get('brs', [str(st.br_address)]))}"
          f"{' (running)' if x.get('br_running') else ' (not started)'}, DHCPv6 {x.get('dhcp_server')} "
          f"(option 94: {x.get('mape_option')}), pool {x.get('pd_pool')}/{x.get('delegated_len')}")
    print(f"  internet {st.inet_netns}: {', '.join(map(str, st.inet_addresses))} "
          f"(TCP echo 7, bulk 19, UDP echo 7, ping); flows in {x.get('inet_flows')}")
    for s in st.slots:
        where = f"netns {s.ce_netns} WAN {s.wan_if} LAN {s.lan_if}" if s.kind == "netns" else \
            f"VM TAPs WAN {s.wan_tap} LAN {s.lan_tap} (root namespace)"
        print(f"  CE{s.index}: {where}; LAN host {s.lan_netns} {s.lan_host} via {s.lan_gateway}; MTU {s.wan_mtu}")
    for prefix, via in (x.get("delegations") or {}).items():
        print(f"  delegated {prefix} → {via}")


@task(help={"json": "print the TestbedStatus JSON (the CE backends' contract)", "run": "run id"})
def status(c, json=False, run=None):
    """Show the running testbed: namespaces, CE slots, BR, internet addresses, delegations."""
    tb = _current(run)
    if not (tb.run_dir / "status.json").exists():
        raise Exit(f"testbed: run {tb.run_dir.name} is {tb.record.state} and never wrote status.json"
                   f"{': ' + tb.record.data['error'] if tb.record.data.get('error') else ''}", code=1)
    if json:
        # Exactly a TestbedStatus (TestbedStatus.from_json reads it); the run's state goes in extra.
        d = json_mod.loads(tb.status.to_json())
        d["extra"]["state"] = tb.record.state
        print(json_mod.dumps(d, indent=2))
    else:
        _print_status(tb)


@task(help={"node": "isp, inet, ce1, lan1, … (or a namespace name)", "run": "run id"})
def shell(c, node, run=None):
    """Open a shell inside a node of the running testbed."""
    tb = _current(run)
    try:
        argv = tb.shell_argv(node)
    except TestbedError as e:
        raise _fail(e) from None
    os.execvp(argv[0], argv)


@task(help={"pool": "the new delegated-prefix pool (default: the next block that still derives)",
            "run": "run id"})
def renumber(c, pool=None, run=None):
    """Hand out new delegated prefixes: CEs get them at their next renew or rebind."""
    try:
        print(f"pd-pool is now {_current(run).renumber(pool)}; CEs move at their next renew/rebind")
    except TestbedError as e:
        raise _fail(e) from None


@task(help={"restore": "send option 94 again instead", "run": "run id"})
def withdraw(c, restore=False, run=None):
    """Stop (or, with --restore, resume) sending the MAP-E container (option 94)."""
    tb = _current(run)
    try:
        tb.restore() if restore else tb.withdraw()
    except TestbedError as e:
        raise _fail(e) from None
    print("option 94 " + ("restored" if restore else "withdrawn") + " from the next DHCPv6 reply on")


@task(name="change-br", help={"br": "new BR address(es), comma-separated (default: the current one + 1)",
                               "run": "run id"})
def change_br(c, br="", run=None):
    """Move the BR to another address and hand that address out in option 94."""
    brs = [b.strip() for b in br.split(",") if b.strip()]
    try:
        print("BR now at " + ", ".join(_current(run).change_br(*brs)))
    except TestbedError as e:
        raise _fail(e) from None


collection = Collection("testbed", up, down, status, shell, renumber, withdraw, change_br)
