"""Rebuild plans: pfvar.h plans the pf ABI rebuild; dhcp6leased brings dhcp6leasectl; man pages lint."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from mapelab.openbsd import components
from mapelab.openbsd.errors import ConsumerDataError


def test_pfvar_plans_abi_rebuild() -> None:
    p = components.plan(["sys/net/pfvar.h", "sys/net/pf_lb.c", "sbin/pfctl/parse.y", "share/man/man5/pf.conf.5",
                         "regress/sbin/pfctl/pf116.in"])
    kinds = [s.kind for s in p.steps]
    assert kinds.index("headers") < kinds.index("kernel") < kinds.index("program")
    assert p.reboot
    assert p.of_kind("headers") == ["include"]
    assert p.of_kind("kernel") == ["GENERIC.MP"]
    programs = set(p.of_kind("program"))
    consumers = {c["dir"] for c in components.abi_consumers()}
    assert consumers <= programs
    assert {"sbin/pfctl", "usr.sbin/authpf", "usr.sbin/ftp-proxy", "usr.sbin/tftp-proxy", "usr.sbin/relayd",
            "usr.sbin/bgpd"} <= programs
    assert p.of_kind("lint-man") == ["share/man/man5/pf.conf.5"]
    assert p.of_kind("regress") == ["regress/sbin/pfctl"]
    assert "make includes" in next(s.command for s in p.steps if s.kind == "headers")
    assert p.as_dict()["reboot"] is True


def test_kernel_only_change_does_not_rebuild_userland() -> None:
    p = components.plan(["sys/net/pf_lb.c"])
    assert [s.kind for s in p.steps] == ["kernel"]


def test_dhcp6leased_brings_dhcp6leasectl() -> None:
    p = components.plan(["sbin/dhcp6leased/engine.c", "sbin/dhcp6leased/dhcp6leased.conf.5"])
    assert set(p.of_kind("program")) == {"sbin/dhcp6leased", "usr.sbin/dhcp6leasectl"}
    assert p.of_kind("lint-man") == ["sbin/dhcp6leased/dhcp6leased.conf.5"]
    assert not p.reboot


def test_man_page_only() -> None:
    p = components.plan(["share/man/man5/pf.conf.5"])
    assert [s.kind for s in p.steps] == ["lint-man"]
    assert "mandoc -Tlint" in p.steps[0].command


def test_unmapped_path() -> None:
    assert components.plan(["etc/pf.conf"]).of_kind("other") == ["etc/pf.conf"]


def test_consumer_data_is_well_formed() -> None:
    data = tomllib.loads((components.DATA / "pfvar_consumers.toml").read_text())
    for c in data["consumer"]:
        assert c["evidence"].startswith(c["dir"] + "/"), c
        assert c["why"]


SOURCE = re.compile(r"^[\w.+-]+(/[\w.+-]+)+ r\d+(\.\d+)+ \(\d{4}-\d{2}-\d{2}\): ")


def test_every_consumer_has_a_probe_or_the_reason_it_has_none() -> None:
    """The gate's pf-consumers check needs, per program, exactly one of: a probe whose sources name a
    revision, or an honest "unsupported" reason that cites what was read."""
    data = tomllib.loads((components.DATA / "pfvar_consumers.toml").read_text())
    entries = data["consumer"] + data["also_checked"]
    assert {c["dir"] for c in data["consumer"]} == {c["dir"] for c in components.abi_consumers()}
    for c in entries:
        assert ("probe" in c) != ("probe_unsupported" in c), c["dir"]
        assert c["probe_source"], c["dir"]
        for src in c["probe_source"]:
            assert SOURCE.match(src), (c["dir"], src)
        if "probe" in c:
            assert c["ok"].strip(), c["dir"]
    for c in data["consumer"]:
        if "probe" in c:
            assert c["ioctls"] and all(i.startswith("DIOC") for i in c["ioctls"]), c["dir"]


def _probes() -> list[components.ConsumerProbe]:
    return [p for p in components.consumer_probes() if p.command]


def test_probes_parse_as_posix_shell() -> None:
    """ksh accepts POSIX sh; a syntax error would fail the check on the CE for the wrong reason."""
    for p in _probes():
        r = subprocess.run(["sh", "-n"], input=p.command, text=True, capture_output=True)
        assert r.returncode == 0, (p.dir, r.stderr)


def test_probes_write_only_under_tmp_and_clean_up() -> None:
    """No configuration outside /tmp/mapelab-*; every daemon started is killed, every pf table made is killed."""
    seen = []
    for p in _probes():
        code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", p.command)  # a '>' inside quotes is data, not a redirection
        targets = re.findall(r"(?<![0-9&])>\s*([^\s&;|)]+)", code) + re.findall(r"2>\s*([^\s&;|)]+)", code)
        assert all(t.startswith("/tmp/mapelab-") for t in targets), (p.dir, targets)
        seen += targets
        for var in re.findall(r"(\w+)=\$!", p.command):
            assert re.search(rf"\bkill \${var}\b", p.command), (p.dir, var)
        for table in re.findall(r"-t (\S+) -T add", p.command):
            assert p.command.count(f"-t {table} -T kill") >= 1, (p.dir, table)
    assert "/tmp/mapelab-relayd.conf" in seen  # the scan itself finds redirections


def test_pflogd_is_started_not_rebuilt() -> None:
    """pflogd.c no longer includes <net/pfvar.h>: the gate checks it runs, the rebuild leaves it alone."""
    pflogd = next(p for p in components.consumer_probes() if p.dir == "sbin/pflogd")
    assert not pflogd.consumer and pflogd.command and not pflogd.ioctls
    assert "sbin/pflogd" not in components.plan(["sys/net/pfvar.h"]).of_kind("program")
    assert all(p.consumer for p in components.consumer_probes() if p.dir != "sbin/pflogd")


GOOD = {"dir": "usr.sbin/x", "evidence": "usr.sbin/x/x.c", "why": "w", "probe": "x -n", "ok": "exit 0",
        "ioctls": ["DIOCGETSTATUS"], "probe_source": ["usr.sbin/x/x.c r1.2 (2024-01-02): opens /dev/pf"]}


def _toml(entry: dict) -> str:
    def val(v: object) -> str:
        return "[" + ", ".join(f'"{x}"' for x in v) + "]" if isinstance(v, list) else f'"{v}"'
    return "[[consumer]]\n" + "".join(f"{k} = {val(v)}\n" for k, v in entry.items())


@pytest.mark.parametrize(("change", "message"), [
    ({"probe_unsupported": "no"}, "exactly one of probe and probe_unsupported"),
    ({"probe": None}, "exactly one of probe and probe_unsupported"),
    ({"probe_source": ["usr.sbin/x/x.c: opens /dev/pf"]}, "path rREV (YYYY-MM-DD)"),
    ({"probe_source": None}, "probe_source must list"),
    ({"ioctls": None}, "must list the DIOC"),
    ({"ioctls": ["SIOCGIFADDR"]}, "DIOC* request names"),
    ({"ok": None}, "command and an ok text"),
    ({"evidence": "sbin/y/y.c"}, "is not under usr.sbin/x/"),
    ({"probes": "x"}, "unknown key probes"),
    ({"probe": None, "probe_unsupported": "why not", "ok": None, "ioctls": None}, None),
    ({"probe": None, "probe_unsupported": "why not", "ioctls": None}, "no ok or ioctls"),
])
def test_consumer_data_rules_are_enforced(tmp_path, change: dict, message: str | None) -> None:
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "c.toml"
    path.write_text(_toml(entry))
    if message is None:
        assert components.load_consumer_data(path)["consumer"][0]["dir"] == "usr.sbin/x"
        return
    with pytest.raises(ConsumerDataError) as e:
        components.load_consumer_data(path)
    assert message in str(e.value) and "usr.sbin/x" in str(e.value)


def test_consumer_data_bad_toml_names_the_file(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[consumer]\n")
    with pytest.raises(ConsumerDataError, match=r"c\.toml: not valid TOML"):
        components.load_consumer_data(path)


def test_plan_series(tmp_path) -> None:
    from mapelab.openbsd import series

    (tmp_path / "p.diff").write_text(
        "--- a/sbin/dhcp6leased/engine.c\n+++ b/sbin/dhcp6leased/engine.c\n@@ -1 +1 @@\n-a\n+b\n")
    (tmp_path / "s.toml").write_text('release = "7.9"\n[topics.t]\nsubject = "s"\nrationale = "r"\n'
                                     '[[patch]]\nname = "p"\ntopic = "t"\npath = "p.diff"\nstrip = 1\n')
    s = series.load(str(tmp_path / "s.toml"))
    p = components.plan_series(s, {"p": (tmp_path / "p.diff").read_text()})
    assert set(p.of_kind("program")) == {"sbin/dhcp6leased", "usr.sbin/dhcp6leasectl"}


def test_scan_abi_consumers(tree) -> None:
    (tree / "usr.sbin/ftp-proxy").mkdir(parents=True)
    (tree / "usr.sbin/ftp-proxy/filter.c").write_text("#include <net/if.h>\n#include <net/pfvar.h>\n")
    (tree / "usr.sbin/rad").mkdir(parents=True)
    (tree / "usr.sbin/rad/rad.c").write_text("/* #include <net/pfvar.h> is not here */\n")
    assert components.scan_abi_consumers(tree) == {"usr.sbin/ftp-proxy": ["usr.sbin/ftp-proxy/filter.c"]}
