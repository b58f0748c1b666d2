"""OpenBSD CE profiles (vm/openbsd/profiles/*.toml): how the CE under test is set up and read.

A profile is data: which patch topics it needs, the guest's interfaces, where MAP-E comes from
(the scenario, or DHCPv6 option 94 through the patched dhcp6leased), which orchestrator turns
a lease into configuration (mapelab itself, or a published third-party one pinned by commit
and sha256), the commands that read its state, and the e2e capabilities it gives -- each one
missing with the reason a check reports as ``unsupported: <reason>``.

Loading is strict: an unknown key is an error naming the nearest valid key, so a typo never
silently turns a capability off.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapelab.errors import InputError
from mapelab.files import named_toml

from .driver import Capability

PROFILE_DIR = Path(__file__).resolve().parents[2] / "vm" / "openbsd" / "profiles"

#: Every capability a profile may name: exactly the CE driver's (mapelab.ce.driver.Capability).
CAPABILITIES = tuple(c.value for c in Capability)
#: Site facts an orchestrator config value may refer to as "@name".
SITE_FACTS = ("lan_networks",)

_SCHEMA: dict[str, Any] = {
    "name": str, "description": str, "series_topics": list,
    "interfaces": {"wan": str, "lan": str, "gif": str},
    "provisioning": {"prefix_delegation": str, "mape_source": str, "dhcp6leased_request_mape": bool,
                     "orchestrator": str},
    "pf": {"anchor": str, "anchor_file": str},
    "orchestrator": {
        "name": str, "source": str, "commit": str, "config_file": str, "config_format": str,
        "command": list, "stop": list, "restart": list, "state_dir": str, "state_file": str,
        "status_format": str, "ownership_file": str, "log": str, "packages": list,
        "config": dict, "file": list,
    },
    "state": {"commands": list},
    "capabilities": {"supported": list, "unsupported": dict, "how": dict},
}
_FILE_KEYS = {"path": str, "install": str, "mode": str, "sha256": str, "unverified": bool}


class ProfileError(InputError):
    """A profile file that cannot be used: one line naming the file, the key and the fix."""


@dataclass(frozen=True)
class PinnedFile:
    path: str  # path inside the source repository
    install: str  # where it goes in the guest
    mode: str
    sha256: str | None  # None only when unverified
    url: str

    @property
    def verified(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Orchestrator:
    name: str
    source: str
    commit: str
    files: tuple[PinnedFile, ...]
    config: dict[str, str]
    raw: dict[str, Any]

    @property
    def unverified_files(self) -> tuple[PinnedFile, ...]:
        return tuple(f for f in self.files if not f.verified)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: Path
    series_topics: tuple[str, ...]
    wan_if: str
    lan_if: str
    gif_if: str
    anchor: str
    anchor_file: str
    mape_source: str
    request_mape: bool
    orchestrator_name: str
    state_commands: tuple[str, ...]
    supported: tuple[str, ...]
    unsupported: dict[str, str]
    how: dict[str, str]
    orchestrator: Orchestrator | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def capability(self, name: str) -> str | None:
        """None when the profile can do ``name``; otherwise the reason it cannot."""
        if name not in CAPABILITIES:
            raise KeyError(f"unknown capability {name!r}{_hint(name, CAPABILITIES)}")
        if name in self.supported:
            return None
        return self.unsupported[name]


def _hint(key: str, valid: Any) -> str:
    near = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(sorted(valid))})"


def _check(table: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ProfileError(f"{where}: unknown key {key!r}{_hint(key, schema)}")
        kind = schema[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ProfileError(f"{where}: [{key}] must be a table")
            _check(value, kind, f"{where} [{key}]")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProfileError(f"{where}: {key} = {value!r} must be a {kind.__name__}")


def _need(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ProfileError(f"{where}: missing key {key!r}")
    return table[key]


def _raw_url(source: str, commit: str, path: str) -> str:
    m = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", source)
    if not m:
        raise ProfileError(f"orchestrator source {source!r}: give https://github.com/OWNER/REPO")
    return f"https://raw.githubusercontent.com/{m[1]}/{m[2]}/{commit}/{path}"


def _orchestrator(t: dict[str, Any], where: str) -> Orchestrator:
    w = f"{where} [orchestrator]"
    commit = _need(t, "commit", w)
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ProfileError(f"{w}: commit {commit!r} must be a full 40-hex-digit commit id")
    source = _need(t, "source", w)
    files = []
    for i, ft in enumerate(t.get("file", [])):
        fw = f"{w} [[file]] #{i + 1}"
        if not isinstance(ft, dict):
            raise ProfileError(f"{fw}: must be a table")
        _check(ft, _FILE_KEYS, fw)
        sha, unverified = ft.get("sha256"), ft.get("unverified", False)
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ProfileError(f"{fw}: sha256 {sha!r} must be 64 lowercase hex digits")
        if (sha is None) != bool(unverified):
            raise ProfileError(f"{fw}: give either sha256 = \"...\" or unverified = true (exactly one)")
        path = _need(ft, "path", fw)
        files.append(PinnedFile(path, _need(ft, "install", fw), _need(ft, "mode", fw), sha,
                                _raw_url(source, commit, path)))
    if not files:
        raise ProfileError(f"{w}: at least one [[orchestrator.file]] (the program itself)")
    config = t.get("config", {})
    for k, v in config.items():
        if not isinstance(v, str):
            raise ProfileError(f"{w} [config]: {k} = {v!r} must be a string")
        if v.startswith("@") and v[1:] not in SITE_FACTS:
            raise ProfileError(f"{w} [config]: {k} = {v!r}: unknown site fact{_hint(v[1:], SITE_FACTS)}")
    return Orchestrator(_need(t, "name", w), source, commit, tuple(files), dict(config), t)


def resolve(name_or_path: str | Path) -> Path:
    p, known = named_toml(name_or_path, PROFILE_DIR)
    if not p.is_file():
        raise ProfileError(f"OpenBSD CE profile {name_or_path}: no such file; known profiles: {', '.join(known)}")
    return p


def load(name_or_path: str | Path) -> Profile:
    path = resolve(name_or_path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: not valid TOML: {e}") from None
    _check(data, _SCHEMA, where)
    ifs = _need(data, "interfaces", where)
    prov = _need(data, "provisioning", where)
    pf = _need(data, "pf", where)
    caps = _need(data, "capabilities", where)
    supported = tuple(caps.get("supported", []))
    unsupported = dict(caps.get("unsupported", {}))
    for name in (*supported, *unsupported, *caps.get("how", {})):
        if name not in CAPABILITIES:
            raise ProfileError(f"{where} [capabilities]: unknown capability {name!r}{_hint(name, CAPABILITIES)}")
    both = set(supported) & set(unsupported)
    missing = set(CAPABILITIES) - set(supported) - set(unsupported)
    if both:
        raise ProfileError(f"{where} [capabilities]: {sorted(both)} both supported and unsupported")
    if missing:
        raise ProfileError(f"{where} [capabilities]: say for {sorted(missing)} either supported, or unsupported "
                           "with the reason")
    for name, reason in unsupported.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ProfileError(f"{where} [capabilities.unsupported]: {name} needs a reason (a sentence)")
    orch_name = _need(prov, "orchestrator", where + " [provisioning]")
    orch = None
    if orch_name != "mapelab":
        if "orchestrator" not in data:
            raise ProfileError(f"{where}: provisioning.orchestrator = {orch_name!r} needs an [orchestrator] table")
        orch = _orchestrator(data["orchestrator"], where)
        if orch.name != orch_name:
            raise ProfileError(f"{where}: [orchestrator] name {orch.name!r} != provisioning.orchestrator {orch_name!r}")
    source = _need(prov, "mape_source", where + " [provisioning]")
    if source not in ("scenario", "dhcpv6"):
        raise ProfileError(f"{where} [provisioning]: mape_source = {source!r}: use scenario or dhcpv6")
    request_mape = prov.get("dhcp6leased_request_mape", False)
    if (source == "dhcpv6") != request_mape:
        raise ProfileError(f"{where} [provisioning]: mape_source = {source!r} and dhcp6leased_request_mape = "
                           f"{str(request_mape).lower()} contradict each other")
    return Profile(
        name=_need(data, "name", where), description=data.get("description", ""), path=path,
        series_topics=tuple(_need(data, "series_topics", where)),
        wan_if=_need(ifs, "wan", where), lan_if=_need(ifs, "lan", where), gif_if=ifs.get("gif", "gif0"),
        anchor=pf.get("anchor", "mape"), anchor_file=pf.get("anchor_file", "/etc/pf.anchors/mape"),
        mape_source=source, request_mape=request_mape, orchestrator_name=orch_name,
        state_commands=tuple(_need(data, "state", where).get("commands", [])),
        supported=supported, unsupported=unsupported, how=dict(caps.get("how", {})),
        orchestrator=orch, raw=data,
    )


def all_profiles() -> list[Profile]:
    return [load(p) for p in sorted(PROFILE_DIR.glob("*.toml"))]


def _shell_assignments(config: dict[str, str], site: dict[str, str]) -> str:
    lines = []
    for key, value in config.items():
        if value.startswith("@"):
            value = site[value[1:]]
        if any(c in value for c in "\"\\$`\n"):
            raise ProfileError(f"orchestrator config {key} = {value!r}: maped accepts literal values only")
        lines.append(f'{key}="{value}"')
    return "\n".join(lines) + "\n"


def render_files(profile: Profile, params: Any, lan_networks: tuple[Any, ...], wan_mtu: int) -> dict[str, str]:
    """What mapelab writes into the guest for ``profile`` (path in the guest -> text).

    ``static``: the commands, anchor and withdrawal mapelab applies itself (as scripts, for
    people and for the byte-for-byte tests) plus a stock dhcp6leased.conf.  An orchestrator
    profile: dhcp6leased.conf with ``request mape`` and the orchestrator's configuration; the
    orchestrator renders its own anchor (from the lease), so none is written here.
    """
    from mapelab.openbsd import ceconf  # the renderer; kept local so loading profiles needs no MAP-E params

    files = {"/etc/dhcp6leased.conf": ceconf.dhcp6leased_conf(
        profile.wan_if, [profile.lan_if], request_mape=profile.request_mape)}
    files["/etc/pf.conf.mape-hook"] = ceconf.pf_conf_hook(profile.anchor, profile.anchor_file)
    if profile.orchestrator is None:
        site = ceconf.Site(wan_if=profile.wan_if, lan_networks=tuple(lan_networks), wan_mtu=wan_mtu,
                           gif_if=profile.gif_if, anchor=profile.anchor)
        cfg = ceconf.render(params, site)
        files[profile.anchor_file] = cfg.anchor_text
        files["apply.sh"] = cfg.apply_script()
        files["withdraw.sh"] = cfg.withdraw_script()
        files[f"/etc/hostname.{profile.gif_if}"] = ceconf.hostname_gif(cfg)
        files["limitations.txt"] = "".join(f"{u.what}: {u}\n" for u in cfg.limitations)
    else:
        facts = {"lan_networks": "{ " + " ".join(str(n) for n in lan_networks) + " }"}
        conf = profile.orchestrator.raw.get("config_file", f"/etc/{profile.orchestrator.name}.conf")
        files[conf] = _shell_assignments(profile.orchestrator.config, facts)
    return files
