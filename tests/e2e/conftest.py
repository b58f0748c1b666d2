"""Fixtures of the e2e suite: one testbed per scenario, CEs through the driver, and the run record.

Selection: ``--ce auto|linux|linux-vm|openbsd`` and ``--scenario NAME`` (repeatable), which
``invoke test-e2e`` passes through.  Everything a run produces lands in ``runs/e2e-<time>/``
(``runs/latest-e2e`` points at the newest):
per test ``inet.pcap`` and ``wan-ce<N>.pcap`` and the ports seen, and at the end
``summary.json``, ``summary.txt`` and ``ports-<ce>.png`` (see :mod:`mapelab.e2e.summary`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapelab import scenario as scenario_mod
from mapelab.ce import driver as ce_driver
from mapelab.ce.driver import CeDriver, CeParams, Unsupported
from mapelab.e2e.select import DEFAULT_SCENARIOS, choose_backend
from mapelab.e2e.summary import RunSummary, TestVerdict
from mapelab.scenario import Scenario

SMALL_SET = 64  # exhaustion runs where the whole set can be exhausted in seconds


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "the e2e suite needs root (network namespaces, TUN devices, Kea); run it as root"
    from mapelab.testbed import api

    missing = api.preflight()
    return "missing for the testbed: " + "; ".join(missing) if missing else None


SKIP_REASON = _why_not_runnable()


# -- selection ----------------------------------------------------------------------------------------


def chosen_backend(config: pytest.Config) -> tuple[str, str]:
    """(backend, why): ``auto`` takes OpenBSD when an OpenBSD image has been built, else the reference CE."""
    return choose_backend(config.getoption("--ce") or os.environ.get("MAPELAB_CE") or "auto")


def options_for(config: pytest.Config, backend: str) -> dict[str, Any]:
    """What the chosen backend is created with, from the command line (``invoke test-e2e`` passes it)."""
    if backend != "openbsd":
        return {}
    opts = {"profile": config.getoption("--ce-profile") or os.environ.get("MAPELAB_CE_PROFILE") or "static",
            "image": config.getoption("--ce-image") or os.environ.get("MAPELAB_CE_IMAGE"),
            "release": config.getoption("--ce-release") or os.environ.get("MAPELAB_CE_RELEASE"),
            "allow_unverified": bool(config.getoption("--allow-unverified"))}
    return {k: v for k, v in opts.items() if v is not None}


def chosen_scenarios(config: pytest.Config) -> list[Scenario]:
    names = config.getoption("--scenario") or os.environ.get("MAPELAB_SCENARIOS", "").split(",")
    names = [n for n in names if n] or list(DEFAULT_SCENARIOS)
    return [scenario_mod.load(n) for n in names]


def shares_address(sc: Scenario) -> bool:
    if sc.ce_count < 2:
        return False
    a, b = (sc.derive(p) for p in sc.delegated_prefixes(2))
    return a.ipv4 == b.ipv4 and a.psid != b.psid


NEEDS: dict[str, tuple[Callable[[Scenario], bool], str]] = {
    "small_set": (lambda sc: len(sc.derive().port_set) <= SMALL_SET,
                  f"a port set of at most {SMALL_SET} ports (add --scenario k12-small-set)"),
    "shared_address": (shares_address, "two CEs sharing one IPv4 address (add --scenario cosmote-like)"),
    "lease": (lambda sc: sc.ce_count >= 1 and sc.name == "cosmote-like",
              "the cosmote-like scenario (lease changes run on it; add --scenario cosmote-like)"),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" not in metafunc.fixturenames:
        return
    scenarios = chosen_scenarios(metafunc.config)
    marker = metafunc.definition.get_closest_marker("needs")
    if marker:
        predicate, wanted = NEEDS[marker.args[0]]
        fitting = [sc for sc in scenarios if predicate(sc)]
        if not fitting:
            names = ", ".join(sc.name for sc in scenarios)
            metafunc.parametrize("scenario", [pytest.param(None, marks=pytest.mark.skip(
                reason=f"none of the selected scenarios ({names}) has {wanted}"), id="no-scenario")],
                scope="session")
            return
        scenarios = fitting
    metafunc.parametrize("scenario", scenarios, ids=[sc.name for sc in scenarios], scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(kind): run only on scenarios that have it (small_set, shared_address, "
                                       "lease)")
    config.addinivalue_line("markers", "claim(id): the deployment-gate claim this test proves (mapelab/e2e/data/"
                                       "gate.toml)")


# -- the run record ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def e2e_run(request: pytest.FixtureRequest) -> Iterator[RunSummary]:
    from mapelab.runs import runs_root, set_latest

    run_dir = runs_root() / time.strftime("e2e-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    backend, why = chosen_backend(request.config)
    summary = RunSummary(run_dir, ce_backend=backend,
                         scenarios=[sc.name for sc in chosen_scenarios(request.config)])
    summary.notes.append(f"CE backend {backend} ({why})")
    request.config.stash[SUMMARY] = summary
    yield summary
    summary.write()
    set_latest(run_dir, "e2e")  # runs/latest-e2e; testbed tasks follow runs/latest-testbed only


SUMMARY = pytest.StashKey[RunSummary]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(Unsupported):
        # The third verdict: not a failure of the CE, not a pass, and not a silent skip.
        reason = f"unsupported: {call.excinfo.value}"
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, reason)
        report.mapelab_unsupported = reason
    summary = item.config.stash.get(SUMMARY, None)
    if summary is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        reason = ""
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        elif report.outcome == "failed":
            reason = str(report.longrepr).strip().splitlines()[-1][:300]
        outcome_name = "error" if report.when == "setup" and report.outcome == "failed" else report.outcome
        if getattr(report, "mapelab_unsupported", None):
            outcome_name = "unsupported"
        claims = [m.args[0] for m in item.iter_markers("claim")]
        summary.add_test(TestVerdict(item.nodeid, outcome_name, round(report.duration, 2), reason=reason,
                                     claims=claims))


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    if getattr(report, "mapelab_unsupported", None):
        return "unsupported", "U", ("UNSUPPORTED", {"yellow": True})
    return None


@pytest.fixture
def test_dir(e2e_run: RunSummary, request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:120]
    d = e2e_run.run_dir / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- testbeds and CEs ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Site:
    """A testbed with its CEs attached and provisioned: what most e2e tests need."""

    scenario: Scenario
    bed: Any  # mapelab.testbed.api.Testbed
    ces: list[CeDriver]
    params: list[CeParams]

    def name(self, i: int) -> str:
        return f"{self.scenario.name}/ce{self.ces[i].slot_index}"


def start_site(scenario: Scenario, backend: str, workdir: Path, summary: RunSummary | None, *, ces: int | None = None,
               ce_options: dict[str, Any] | None = None, **up_options: Any) -> Site:
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    from mapelab.testbed import api

    n = ces if ces is not None else min(2, scenario.ce_count)
    if ce_driver.backend(backend).slot_kind == "vm":  # a VM backend: every slot gets TAPs, not a namespace
        up_options.setdefault("vm_slots", tuple(range(1, n + 1)))
    bed = api.up(scenario.path, ces=n, log=lambda *_: None, **up_options)
    drivers: list[CeDriver] = []
    options = dict(ce_options or {})
    if getattr(ce_driver.backend(backend), "wants_scenario", False):
        options["scenario"] = bed.status.extra["effective_scenario"]  # what this testbed really serves
    try:
        for slot in bed.status.slots:
            d = ce_driver.create(backend, slot, state_dir=workdir / f"ce{slot.index}", **options)
            drivers.append(d)
            d.start()
        params = [d.wait_provisioned(60) for d in drivers]
    except BaseException:
        for d in drivers:
            d.teardown()
        bed.down()
        raise
    site = Site(scenario, bed, drivers, params)
    if summary is not None:
        for i, (d, p) in enumerate(zip(drivers, params, strict=True)):
            summary.add_ce(site.name(i), {
                "ipv4": str(p.ipv4), "psid": p.psid, "psid_len": p.psid_len, "psid_offset": p.psid_offset,
                "map_address": str(p.map_address), "delegated_prefix": str(p.delegated_prefix),
                "br": str(p.br), "testbed_run": str(bed.run_dir),
                "ce": d.describe(), "system": dict(d.state().system),
                "capabilities": d.capabilities().as_dict(),
            }, p.port_set.ranges())
    return site


def stop_site(site: Site) -> None:
    for d in site.ces:
        d.teardown()
    site.bed.down()


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    name = chosen_backend(request.config)[0]
    ready = ce_driver.backend(name).image_ready(**options_for(request.config, name))
    if not ready.ready:  # hours of work would be needed first: stop the session with the command that does it
        pytest.exit(f"CE backend {name}: {ready.detail}", returncode=2)
    return name


@pytest.fixture(scope="session")
def backend_options(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    return options_for(request.config, backend)


@pytest.fixture(scope="session")
def _shared_sites() -> Iterator[dict[str, Site]]:
    """Long-lived sites by scenario name, made on first use and kept to the end of the session
    (pytest would tear a parametrized session fixture down and up again whenever the test order
    switches scenarios; a CE re-provisioned mid-run would muddle the run record)."""
    sites: dict[str, Site] = {}
    yield sites
    for s in sites.values():
        stop_site(s)


@pytest.fixture
def site(request: pytest.FixtureRequest, scenario: Scenario | None, backend: str, backend_options: dict[str, Any],
         e2e_run: RunSummary,
         test_dir: Path) -> Iterator[Site]:
    """A testbed for ``scenario`` with a CE in each slot (at most two), provisioned.

    Shared by the whole session when the port set is large; a fresh one per test when it is
    small (at most SMALL_SET ports), because every flow holds its port for the CE's state
    timeout (TCP's TIME_WAIT is two minutes) and one test's flows would starve the next.
    """
    assert scenario is not None
    if len(scenario.derive().port_set) > SMALL_SET:
        shared = request.getfixturevalue("_shared_sites")
        if scenario.name not in shared:
            shared[scenario.name] = start_site(scenario, backend, e2e_run.run_dir / f"{scenario.name}-ces", e2e_run,
                                               ce_options=backend_options)
        yield shared[scenario.name]
        return
    s = start_site(scenario, backend, test_dir, e2e_run, ce_options=backend_options)
    yield s
    stop_site(s)


@pytest.fixture
def fresh_site(backend: str, backend_options: dict[str, Any], e2e_run: RunSummary, test_dir: Path
               ) -> Iterator[Callable[..., Site]]:
    """A testbed of its own for a test that changes leases, with short DHCPv6 timers (T1 4 s)."""
    made: list[tuple[Site, list[subprocess.Popen[bytes]]]] = []

    def make(scenario: Scenario, *, t1: int = 4, t2: int = 6, preferred: int = 10, valid: int = 14,
             ces: int = 1, ce_options: dict[str, Any] | None = None, **up_options: Any) -> Site:
        short = dataclasses.replace(scenario, dhcp=dataclasses.replace(
            scenario.dhcp, t1=t1, t2=t2, preferred=preferred, valid=valid))
        path = test_dir / f"{scenario.name}-short-timers.toml"
        path.write_text(scenario_mod.to_toml(short))
        s = start_site(scenario_mod.load(path), backend, test_dir, None, ces=ces,
                       ce_options={**backend_options, **(ce_options or {})},
                       **up_options)
        made.append((s, start_captures(s, test_dir, e2e_run)))
        return s

    yield make
    for s, caps in made:
        stop_captures(caps, e2e_run)
        stop_site(s)


# -- per-test captures ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Capture:
    """One tcpdump: its process, the pcap it writes and its own log (stderr), beside the pcap."""

    proc: subprocess.Popen[bytes]
    pcap: Path
    log: Path
    ok: bool = True


def start_captures(site: Site, where: Path, summary: RunSummary) -> list[Capture]:
    """tcpdump on the IPv4 internet's link and on every CE's WAN, into ``where``.

    A capture that does not start (tcpdump missing, a wrong interface, no permission) is not
    hidden: its stderr goes to ``<pcap>.log`` and the run record gets a warning naming the pcap
    and tcpdump's reason.  It does not fail the test — the checks judge the CE from the internet's
    own flow records, not from pcaps, so a broken capture says nothing about the CE — but a reader
    of the run record must know the pcap it expects is missing or incomplete.
    """
    st = site.bed.status
    jobs = [(st.inet_netns, "any", where / "inet.pcap")]
    for s in st.slots:
        if s.ce_netns:
            jobs.append((s.ce_netns, s.wan_if, where / f"wan-ce{s.index}.pcap"))
        elif s.wan_tap:
            jobs.append((None, s.wan_tap, where / f"wan-ce{s.index}.pcap"))
    if shutil.which("tcpdump") is None:
        for _ns, _iface, out in jobs:
            summary.warn(f"capture {out.parent.name}/{out.name} not taken: tcpdump is not installed "
                         "(apt-get install tcpdump)")
        return []
    caps = []
    for ns, iface, out in jobs:
        argv = (["ip", "netns", "exec", ns] if ns else []) + ["tcpdump", "-q", "-n", "-U", "-s", "256",
                                                              "-i", iface, "-w", str(out)]
        log = out.with_name(out.name + ".log")
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        caps.append(Capture(proc, out, log))
    # tcpdump says "listening on IFACE" once it captures; waiting for that (not a fixed sleep) is both
    # faster and the proof that it started.
    deadline = time.monotonic() + 5
    pending = list(caps)
    while pending and time.monotonic() < deadline:
        pending = [c for c in pending if c.proc.poll() is None and b"listening on" not in c.log.read_bytes()]
        time.sleep(0.02)
    for c in caps:
        if c.proc.poll() is not None or c in pending:
            c.ok = False
            _capture_warning(summary, c, "did not start" if c.proc.poll() is not None else "not listening after 5 s")
    return caps


def _capture_warning(summary: RunSummary, c: Capture, what: str) -> None:
    text = c.log.read_text(errors="replace").strip().splitlines()
    reason = text[-1] if text else f"exit status {c.proc.returncode}"
    message = f"capture {c.pcap.parent.name}/{c.pcap.name} {what}: {reason} (log: {c.log.name})"
    summary.warn(message)
    warnings.warn(message, stacklevel=2)


def stop_captures(caps: list[Capture], summary: RunSummary) -> None:
    for c in caps:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGINT)
    for c in caps:
        try:
            c.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()
            if c.ok:
                _capture_warning(summary, c, "did not stop on SIGINT and was killed (its pcap may be cut short)")
            continue
        m = re.search(rb"(\d+) packets? dropped by kernel", c.log.read_bytes())
        if c.ok and m and int(m.group(1)):
            _capture_warning(summary, c, f"is incomplete: {int(m.group(1))} packets dropped by the kernel")


@pytest.fixture(autouse=True)
def _capture(request: pytest.FixtureRequest) -> Iterator[None]:
    if "site" not in request.fixturenames or SKIP_REASON:
        yield
        return
    site: Site = request.getfixturevalue("site")
    where: Path = request.getfixturevalue("test_dir")
    summary: RunSummary = request.getfixturevalue("e2e_run")
    caps = start_captures(site, where, summary)
    try:
        yield
    finally:
        stop_captures(caps, summary)


@pytest.fixture
def record_ports(e2e_run: RunSummary, test_dir: Path) -> Callable[[str, list[int]], None]:
    """Keep the ports the internet saw: in the test's directory and in the run's picture."""

    def record(ce_name: str, ports: list[int]) -> None:
        e2e_run.add_ports(ce_name, ports)
        with (test_dir / "ports.json").open("a") as f:
            f.write(json.dumps({"ce": ce_name, "ports": sorted(ports)}) + "\n")

    return record
