"""From the files a series touches to the smallest correct rebuild: what build-vm runs.

The rules (docs/architecture.md, "components drive rebuilds"):

- anything under ``sys/`` → rebuild and install the kernel (GENERIC.MP), then reboot;
- ``sys/net/pfvar.h`` → first ``make includes`` (pfctl and friends include it from
  /usr/include), then rebuild every program built against it, because the pf ioctl ABI
  changed: an old pfctl against a new kernel fails or, worse, misreads rules.  The list of
  those programs is data (``data/pfvar_consumers.toml``), checked against openbsd/src;
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


def abi_consumers(header: str = "sys/net/pfvar.h") -> list[dict[str, str]]:
    """The verified consumers of an ABI header, from the data file."""
    data = tomllib.loads((DATA / ABI_HEADERS[header]).read_text())
    return list(data.get("consumer", []))


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
