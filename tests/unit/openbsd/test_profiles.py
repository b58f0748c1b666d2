"""OpenBSD CE profiles: strict loading, capabilities with reasons, the pinned orchestrator."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapelab.ce import openbsd_profiles as profiles


def test_both_profiles_load_and_say_every_capability() -> None:
    static, dhcp = profiles.load("static"), profiles.load("dhcp6leased")
    assert static.series_topics == ("pf-mape",) and not static.request_mape and static.orchestrator is None
    assert dhcp.series_topics == ("pf-mape", "dhcp6leased-mape") and dhcp.request_mape
    for p in (static, dhcp):
        for cap in profiles.CAPABILITIES:
            reason = p.capability(cap)
            assert reason is None or len(reason) > 20
    assert "option 94" in static.capability("dhcp-mape")
    assert dhcp.capability("dhcp-mape") is None and static.capability("renew") is None
    assert static.capability("os-build") is None and "reference CE" in dhcp.capability("faults")
    with pytest.raises(KeyError, match="did you mean 'renew'"):
        static.capability("renw")


def test_orchestrator_is_pinned_by_commit_url_and_sha256() -> None:
    orch = profiles.load("dhcp6leased").orchestrator
    assert orch is not None and orch.name == "maped" and len(orch.commit) == 40
    main = orch.files[0]
    assert main.install == "/usr/local/sbin/maped" and main.verified
    assert main.url == f"https://raw.githubusercontent.com/atmosx/openbsd-mape-ce/{orch.commit}/maped/maped"
    assert all(f.url.endswith(f.path) for f in orch.files)
    assert {f.path for f in orch.unverified_files} >= {"maped/Maped.pm", "maped/MapedStatus.pm"}
    assert orch.config["LAN_NET"] == "@lan_networks" and orch.raw["state_file"] == "/var/db/maped/status.json"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def _static_text() -> str:
    return (profiles.PROFILE_DIR / "static.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("[interfaces]", "[interface]"), "unknown key 'interface' (did you mean 'interfaces'?)"),
        (("wan = ", "wann = "), "unknown key 'wann' (did you mean 'wan'?)"),
        (("flap-wan = \"ifconfig", "flap-wlan = \"ifconfig"), "unknown capability 'flap-wlan'"),
        (('generation = "static', 'generations = "static'), "unknown capability 'generations'"),
        (("dhcp6leased_request_mape = false", "dhcp6leased_request_mape = true"), "contradict"),
        (('orchestrator = "mapelab"', 'orchestrator = "maped"'), "needs an [orchestrator] table"),
        (('dhcp-mape = "static', 'dhcp-mape = ""\n#'), "dhcp-mape needs a reason"),
    ],
)
def test_bad_profiles_name_the_key_and_the_fix(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    text = _static_text()
    assert edit[0] in text
    with pytest.raises(profiles.ProfileError) as e:
        profiles.load(_write(tmp_path, text.replace(edit[0], edit[1], 1)))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_capability_left_unsaid_is_an_error(tmp_path: Path) -> None:
    text = _static_text().replace('faults = "the suite', '# faults = "the suite')
    with pytest.raises(profiles.ProfileError, match="faults"):
        profiles.load(_write(tmp_path, text))


def test_pins_are_checked(tmp_path: Path) -> None:
    text = (profiles.PROFILE_DIR / "dhcp6leased.toml").read_text()
    bad_sha = text.replace('sha256 = "df6a', 'sha256 = "DF6A', 1)
    with pytest.raises(profiles.ProfileError, match="64 lowercase hex"):
        profiles.load(_write(tmp_path, bad_sha))
    both = text.replace("unverified = true", 'unverified = true\nsha256 = "' + "0" * 64 + '"', 1)
    with pytest.raises(profiles.ProfileError, match="exactly one"):
        profiles.load(_write(tmp_path, both))
    with pytest.raises(profiles.ProfileError, match="known profiles: dhcp6leased, static"):
        profiles.load("nope")
