"""Rebuild plans: pfvar.h plans the pf ABI rebuild; dhcp6leased brings dhcp6leasectl; man pages lint."""

from __future__ import annotations

import tomllib

from mapelab.openbsd import components


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
