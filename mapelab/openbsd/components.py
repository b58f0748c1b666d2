"""From the files a series touches to the smallest correct rebuild: what build-vm runs.

The rules (docs/architecture.md, "components drive rebuilds"):

- anything under ``sys/`` → rebuild and install the kernel (GENERIC.MP), then reboot;
- ``sys/net/pfvar.h`` → first ``make includes`` (pfctl and friends include it from
  /usr/include), then rebuild every program built against it, because the pf ioctl ABI
  changed: an old pfctl against a new kernel fails or, worse, misreads rules.  The list of
  those programs is data (``data/pfvar_consumers.toml``), checked against openbsd/src,
  together with the probe that shows each of them working against the patched kernel;
- another installed kernel header (``sys/net``, ``sys/netinet*``, ``sys/sys``) → ``make includes``;
- a program's directory (``sbin/X``, ``usr.sbin/X``, ``bin/X``, ``usr.bin/X``, ``libexec/X``)
  → ``make obj && make && make install`` there; some programs come in pairs sharing headers
  (dhcp6leased and dhcp6leasectl), listed in ``COMPANIONS``;
- ``lib/X`` → rebuild that library; ``regress/…`` → run that regress directory;
- a manual page (``*.1`` … ``*.9``) → nothing to build, but ``mandoc -Tlint`` it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConsumerDataError
from .series import Series
from .unidiff import parse

DATA = Path(__file__).resolve().parent / "data"
PROGRAM_ROOTS = ("bin", "sbin", "usr.bin", "usr.sbin", "libexec")
INSTALLED_HEADER_DIRS = ("sys/net/", "sys/netinet/", "sys/netinet6/", "sys/sys/", "sys/crypto/")
COMPANIONS = {
    "sbin/dhcp6leased": ["usr.sbin/dhcp6leasectl"],
    "usr.sbin/dhcp6leasectl": ["sbin/dhcp6leased"],
}
ABI_HEADERS = {"sys/net/pfvar.h": "pfvar_consumers.toml"}
_MAN = re.compile(r"\.[1-9]$")
ORDER = ("headers", "kernel", "library", "program", "regress", "lint-man", "other")


@dataclass(frozen=True)
class Step:
    """One thing to do in the guest, with the command and why it is needed."""

    kind: str
    target: str
    command: str
    reason: str


@dataclass
class RebuildPlan:
    steps: list[Step] = field(default_factory=list)
    reboot: bool = False

    def add(self, step: Step) -> None:
        """Add a step once: many touched files map to the same kernel or program build."""
        if all((s.kind, s.target) != (step.kind, step.target) for s in self.steps):
            self.steps.append(step)

    def sort(self) -> None:
        self.steps.sort(key=lambda s: (ORDER.index(s.kind), s.target))

    def of_kind(self, kind: str) -> list[str]:
        return [s.target for s in self.steps if s.kind == kind]

    def as_dict(self) -> dict:
        return {"reboot": self.reboot, "steps": [asdict(s) for s in self.steps]}

    def text(self) -> str:
        if not self.steps:
            return "nothing to rebuild"
        lines = [f"{s.kind:9} {s.target:32} {s.command}\n{'':9} ({s.reason})" for s in self.steps]
        if self.reboot:
            lines.append("reboot into the new kernel afterwards")
        return "\n".join(lines)


# "sbin/pfctl/pfctl.c r1.397 (2025-05-26): what the file shows" -- the $OpenBSD$ revision read.
_SOURCE = re.compile(r"^[\w.+-]+(?:/[\w.+-]+)+ r\d+(?:\.\d+)+ \(\d{4}-\d{2}-\d{2}\): \S")
_IOCTL = re.compile(r"^DIOC[A-Z]+$")
_ENTRY_KEYS = {
    "consumer": ({"dir", "evidence", "why"}, {"probe", "ok", "ioctls", "probe_unsupported", "probe_source"}),
    "also_checked": ({"dir", "checked", "why"}, {"probe", "ok", "probe_unsupported", "probe_source"}),
}


@dataclass(frozen=True)
class ConsumerProbe:
    """How the gate checks one program against the patched kernel: a ksh script run as root on the CE
    that exits 0 only when the program answered without an ioctl error, or the reason no such script
    can be honest (``unsupported``).  ``consumer`` is False for programs started but not built against
    the header (pflogd): their probe is a start check."""

    dir: str
    consumer: bool
    why: str
    command: str | None
    ok: str | None
    ioctls: tuple[str, ...]
    unsupported: str | None
    sources: tuple[str, ...]


def load_consumer_data(path: Path) -> dict[str, list[dict]]:
    """A consumer data file, checked against the rules its header comment states.

    Checked on every load because build plans and the deployment gate both trust it: a probe without
    a source, or with both a command and an "unsupported" reason, would let a check claim more than
    anyone verified.
    """
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConsumerDataError(f"{path}: not valid TOML ({e}); fix the file") from e
    out: dict[str, list[dict]] = {}
    for table, (required, optional) in _ENTRY_KEYS.items():
        out[table] = list(data.get(table, []))
        for entry in out[table]:
            _check_entry(path, table, entry, required, optional)
    return out


def _check_entry(path: Path, table: str, e: dict, required: set[str], optional: set[str]) -> None:
    where = f"{path}: [[{table}]] {e.get('dir', '?')}"

    def bad(problem: str) -> ConsumerDataError:
        return ConsumerDataError(f"{where}: {problem}")

    if missing := sorted(k for k in required if not e.get(k)):
        raise bad(f"missing {', '.join(missing)}")
    if unknown := sorted(set(e) - required - optional):
        raise bad(f"unknown key {', '.join(unknown)}")
    if table == "consumer" and not e["evidence"].startswith(e["dir"] + "/"):
        raise bad(f"evidence {e['evidence']} is not under {e['dir']}/")
    if ("probe" in e) == ("probe_unsupported" in e):
        raise bad("needs exactly one of probe and probe_unsupported")
    sources = e.get("probe_source") or []
    if not sources or not isinstance(sources, list):
        raise bad("probe_source must list the files (path, revision, date) the probe relies on")
    for s in sources + (list(e["checked"]) if table == "also_checked" else []):
        if not isinstance(s, str) or not _SOURCE.match(s):
            raise bad(f"source {s!r} must read 'path rREV (YYYY-MM-DD): what it shows'")
    if "probe" in e:
        if not str(e["probe"]).strip() or not str(e.get("ok", "")).strip():
            raise bad("a probe needs its command and an ok text")
        ioctls = e.get("ioctls", [])
        if table == "consumer" and not ioctls:
            raise bad("a consumer's probe must list the DIOC* ioctls it makes the program issue")
        if not all(isinstance(i, str) and _IOCTL.match(i) for i in ioctls):
            raise bad(f"ioctls {ioctls} must be DIOC* request names")
    elif not str(e["probe_unsupported"]).strip() or "ok" in e or "ioctls" in e:
        raise bad("probe_unsupported takes a reason, and no ok or ioctls")


def abi_consumers(header: str = "sys/net/pfvar.h") -> list[dict]:
    """The verified consumers of an ABI header, from the (checked) data file."""
    return load_consumer_data(DATA / ABI_HEADERS[header])["consumer"]


def consumer_probes(header: str = "sys/net/pfvar.h") -> list[ConsumerProbe]:
    """Every program the gate checks after an ABI change of ``header``: the consumers, then the
    programs it also starts (``also_checked``), each with its probe or the reason it has none."""
    data = load_consumer_data(DATA / ABI_HEADERS[header])
    return [ConsumerProbe(dir=e["dir"], consumer=table == "consumer", why=e["why"],
                          command=e["probe"].strip() if "probe" in e else None, ok=e.get("ok"),
                          ioctls=tuple(e.get("ioctls", ())), unsupported=e.get("probe_unsupported"),
                          sources=tuple(e["probe_source"]))
            for table in _ENTRY_KEYS for e in data[table]]


def scan_abi_consumers(tree: Path, header: str = "sys/net/pfvar.h") -> dict[str, list[str]]:
    """Program directories in a real tree whose C sources include ``header`` → the files that do.

    This is how the data file is kept honest: run it on a fresh /usr/src and compare (the
    ``openbsd`` tests do).  Only base programs count; regress and the kernel are not consumers.
    """
    needle = re.compile(r'^\s*#\s*include\s*[<"]' + re.escape(header.removeprefix("sys/")) + r'[>"]', re.M)
    found: dict[str, list[str]] = {}
    for root in PROGRAM_ROOTS:
        for f in sorted((tree / root).rglob("*")):
            if f.suffix not in (".c", ".h", ".y") or not f.is_file():
                continue
            if needle.search(f.read_text(errors="replace")):
                rel = f.relative_to(tree).as_posix()
                d = _program_dir(rel)
                if d:
                    found.setdefault(d, []).append(rel)
    return found


def _program_dir(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[0] in PROGRAM_ROOTS:
        if parts[0] == "libexec" and parts[1] == "snmpd" and len(parts) >= 4:
            return "/".join(parts[:3])
        return "/".join(parts[:2])
    return None


def _program_step(d: str, reason: str) -> Step:
    return Step("program", d, f"cd /usr/src/{d} && make obj && make && make install", reason)


def touched_files(items: list[tuple[str, str, int]]) -> list[str]:
    """The paths (relative to /usr/src) that patches touch, from (name, text, strip) triples."""
    out: list[str] = []
    for name, text, strip in items:
        for fp in parse(text, name):
            rel = fp.target(strip)
            if rel not in out:
                out.append(rel)
    return out


def plan_series(s: Series, texts: dict[str, str], arch: str = "amd64") -> RebuildPlan:
    """The rebuild plan for a whole series (``texts``: patch name → verified patch text)."""
    return plan(touched_files([(p.name, texts[p.name], p.strip) for p in s.patches]), arch=arch)


def plan(touched: list[str], arch: str = "amd64", kernel: str = "GENERIC.MP") -> RebuildPlan:
    """The rebuild plan for a set of touched paths (relative to /usr/src)."""
    p = RebuildPlan()
    for path in sorted(set(touched)):
        if _MAN.search(path):
            p.add(Step("lint-man", path, f"mandoc -Tlint /usr/src/{path}", "manual page: nothing to build"))
            continue
        if path.startswith("sys/"):
            p.reboot = True
            build = f"cd /usr/src/sys/arch/{arch}/compile/{kernel} && make obj && make config && make && make install"
            p.add(Step("kernel", kernel, build, f"{path} is kernel source"))
            if path.endswith(".h") and path.startswith(INSTALLED_HEADER_DIRS):
                p.add(Step("headers", "include", "cd /usr/src/include && make includes",
                           f"{path} is installed in /usr/include"))
            if path in ABI_HEADERS:
                for c in abi_consumers(path):
                    p.add(_program_step(c["dir"], f"includes <{path[4:]}>: the pf ioctl ABI changed ({c['why']})"))
            continue
        if path.startswith("regress/"):
            d = "/".join(path.split("/")[:3])
            p.add(Step("regress", d, f"cd /usr/src/{d} && make", f"{path} is a regress test"))
            continue
        if path.startswith("lib/"):
            d = "/".join(path.split("/")[:2])
            p.add(Step("library", d, f"cd /usr/src/{d} && make obj && make && make install", f"{path} changed"))
            continue
        d = _program_dir(path)
        if d:
            p.add(_program_step(d, f"{path} changed"))
            for other in COMPANIONS.get(d, []):
                p.add(_program_step(other, f"shares headers with {d}"))
            continue
        p.add(Step("other", path, "install by hand or run `make build`", "not mapped to a build step"))
    p.sort()
    return p
