"""One error path for every task: bad input exits 2 with one line, a failed piece of work exits 1.

Every task is declared with :func:`guarded` under invoke's ``@task``::

    @task(help={...})
    @guarded(cpus=Int(1, 64, default=2), accel=Choice("kvm", "tcg"))
    def boot_linux(c, name=None, accel=None, cpus=None): ...

Why options are checked here and not by invoke: invoke converts an option whose default is an
int itself, and ``--cpus x`` then dies in its parser with a traceback.  So integer, list and
enum options are declared untyped (default ``None``) and :func:`guarded` parses them, before
the body runs and before anything has started, naming the option and what it accepts.

Then the body runs, and whatever the library raises is sorted in one place:

* :class:`BadInput` (raised by a task body) and the library's :class:`~mapelab.errors.InputError`
  subclasses (``ScenarioError``, ``CalcError``, ``TestbedInputError`` …) → one line, exit 2;
* :data:`LAYER_ERRORS`: each layer's user-facing error base and the status its docs promise;
* Ctrl-C → "interrupted", exit 130.

Anything else is a bug and keeps its traceback.  ``build_collection`` stamps each body with its
full task name (``vm.boot-linux``), which prefixes every message.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit

from mapelab.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])

#: A layer's error base class → the exit status its documentation promises.  Looked up in
#: ``sys.modules`` only: a class whose module was never imported cannot have been raised, and
#: ``invoke --list`` stays fast.  Bad input of any layer derives from InputError (exit 2).
LAYER_ERRORS: tuple[tuple[str, str, int], ...] = (
    ("mapelab.openbsd.errors", "OpenBSDError", 2),  # its layer: every error names the input to fix
    ("mapelab.qemu.errors", "QemuError", 1),
    ("mapelab.testbed.supervisor", "TestbedError", 1),
    ("mapelab.testbed.netns", "NetError", 1),
)


class BadInput(Exception):
    """A value the user must change: the task prints ``<task>: <message>`` and exits 2."""


def flag(name: str) -> str:
    """How the user typed an option: ``vm_slots`` → ``--vm-slots``, ``k`` → ``-k``."""
    return f"-{name}" if len(name) == 1 else "--" + name.replace("_", "-")


def nearest(value: str, known: Iterable[str]) -> str:
    """`` (did you mean 'kvm'?)`` when a known value is close, else empty."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- option checks ------------------------------------------------------------------------------------------


class Opt:
    """An option's check: ``parse`` gets the raw string (never None) and returns the value the body
    gets, or raises BadInput with a message that starts with what was wrong (the flag is added)."""

    default: Any = None

    def check(self, name: str, raw: Any) -> Any:
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except BadInput as e:
            raise BadInput(f"{flag(name)} {raw!r}: {e}") from None

    def parse(self, raw: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Opt):
    """A whole number in ``lo..hi`` (decimal)."""

    lo: int
    hi: int
    default: int | None = None

    def parse(self, raw: Any) -> int:
        try:
            value = int(str(raw).strip(), 10)
        except ValueError:
            raise BadInput(f"not a whole number; use {self.lo}..{self.hi}") from None
        if not self.lo <= value <= self.hi:
            raise BadInput(f"out of range; use {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True)
class IntList(Opt):
    """Comma-separated whole numbers in ``lo..hi``, e.g. ``1,2`` → ``(1, 2)``; empty → ``()``."""

    lo: int
    hi: int
    default: tuple[int, ...] = ()

    def parse(self, raw: Any) -> tuple[int, ...]:
        out = []
        for part in (p.strip() for p in str(raw).split(",")):
            if not part:
                continue
            if not part.isdigit() or not self.lo <= int(part) <= self.hi:
                raise BadInput(f"{part!r} is not a number in {self.lo}..{self.hi}; write e.g. {self.lo},{self.lo + 1}")
            out.append(int(part))
        if len(set(out)) != len(out):
            raise BadInput("a number repeats; name each one once")
        return tuple(out)


@dataclass(frozen=True)
class Choice(Opt):
    """One of a fixed set of words."""

    values: tuple[str, ...]
    default: str | None = None

    def parse(self, raw: Any) -> str:
        if raw not in self.values:
            raise BadInput(f"use one of {', '.join(self.values)}{nearest(str(raw), self.values)}")
        return str(raw)


@dataclass(frozen=True)
class Name(Opt):
    """A word matching ``pattern`` (machine names, run ids, topics …): refuses paths, spaces and
    leading dashes before they reach a file name or a command line."""

    pattern: str
    what: str
    default: str | None = None

    def parse(self, raw: Any) -> str:
        if not re.fullmatch(self.pattern, str(raw)):
            raise BadInput(f"not {self.what}")
        return str(raw)


@dataclass(frozen=True)
class Ipv6Net(Opt):
    """An IPv6 network written with its length, e.g. ``2001:db8:12:3500::/56``."""

    example: str = "2001:db8:12:3500::/56"

    def parse(self, raw: Any) -> str:
        try:
            IPv6Network(str(raw))
        except ValueError as e:
            raise BadInput(f"{e}; write an IPv6 network such as {self.example}") from None
        return str(raw)


@dataclass(frozen=True)
class Ipv6List(Opt):
    """Comma-separated IPv6 addresses; empty → ``[]``."""

    default: tuple[str, ...] = ()

    def parse(self, raw: Any) -> list[str]:
        out = [b.strip() for b in str(raw).split(",") if b.strip()]
        for b in out:
            try:
                IPv6Address(b)
            except ValueError:
                raise BadInput(f"{b!r} is not an IPv6 address (e.g. 2001:db8:ffff::2)") from None
        return out


@dataclass(frozen=True)
class ExistingDir(Opt):
    """A directory that exists."""

    def parse(self, raw: Any) -> str:
        if not Path(str(raw)).expanduser().is_dir():
            raise BadInput("not a directory here; give an existing directory")
        return str(raw)


@dataclass(frozen=True)
class ExistingFile(Opt):
    """A file that exists."""

    def parse(self, raw: Any) -> str:
        if not Path(str(raw)).expanduser().is_file():
            raise BadInput("not a file here; give an existing file")
        return str(raw)


@dataclass(frozen=True)
class NewPath(Opt):
    """Somewhere to write: its parent directory exists (``dir_ok``: it may itself be a directory)."""

    dir_ok: bool = False
    must_not_exist: bool = False

    def parse(self, raw: Any) -> str:
        p = Path(str(raw)).expanduser().absolute()
        if self.must_not_exist and p.exists():
            raise BadInput("already exists; remove it or choose another path")
        if p.is_dir() and not self.dir_ok:
            raise BadInput("is a directory; give a file name")
        if not (p.is_dir() or p.parent.is_dir()):
            raise BadInput(f"its directory {p.parent} does not exist; create it first")
        return str(raw)


@dataclass(frozen=True)
class Url(Opt):
    """An http(s) or file URL (a mirror base)."""

    def parse(self, raw: Any) -> str:
        if not re.fullmatch(r"(https?|file)://\S+", str(raw)):
            raise BadInput("not a URL; write e.g. https://HOST/pub/OpenBSD or file:///srv/mirror")
        return str(raw).rstrip("/")


@dataclass(frozen=True)
class GitRef(Opt):
    """A branch, tag or commit as git-check-ref-format(1) allows, and never a leading dash (it
    would be read as an option of git)."""

    def parse(self, raw: Any) -> str:
        text = str(raw)
        bad = (not text or text.startswith(("-", "/")) or text.endswith((".", "/", ".lock")) or ".." in text
               or "@{" in text or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", text))
        if bad:
            raise BadInput("not a git branch, tag or commit (see git-check-ref-format(1))")
        return text


@dataclass(frozen=True)
class GitSource(Opt):
    """A git mirror: a URL (``https://…``, ``ssh://…``, ``user@host:path``) or a local repository."""

    def parse(self, raw: Any) -> str:
        text = str(raw)
        if text.startswith("-"):
            raise BadInput("not a git URL or repository (it would be read as an option of git)")
        if re.match(r"[a-z][a-z0-9+.-]*://\S+$|[\w.-]+@[\w.-]+:\S+$", text) or Path(text).expanduser().is_dir():
            return text
        raise BadInput("not a git URL (https://…, ssh://…, user@host:path) and no such local repository")


@dataclass(frozen=True)
class RelPaths(Opt):
    """Comma-separated paths relative to /usr/src (``regress/sbin/pfctl/pf116.in,…``); empty → ``[]``."""

    default: tuple[str, ...] = ()

    def parse(self, raw: Any) -> list[str]:
        out = [a.strip() for a in str(raw).split(",") if a.strip()]
        for a in out:
            if a.startswith("/") or ".." in Path(a).parts:
                raise BadInput(f"{a!r} leaves the tree; give paths relative to /usr/src, e.g. sbin/pfctl/parse.y")
        return out


@dataclass(frozen=True)
class ScenarioFile(Opt):
    """A scenario name or TOML file (or a list of them, for a repeatable option), loaded and checked
    in full (:func:`mapelab.scenario.load`): an unknown key, a wrong type or a value out of range is
    refused here, before the task starts anything."""

    default: str | None = None

    def check(self, name: str, raw: Any) -> Any:
        from mapelab import scenario

        for one in raw if isinstance(raw, list) else [] if raw is None else [raw]:
            try:
                scenario.load(one)
            except scenario.ScenarioError as e:
                raise BadInput(f"{flag(name)} {e}") from None
        return self.default if raw is None else raw


# -- the guard ------------------------------------------------------------------------------------------


def _layer_error_code(e: BaseException) -> int | None:
    for module, cls_name, code in LAYER_ERRORS:
        mod = sys.modules.get(module)
        cls = getattr(mod, cls_name, None) if mod is not None else None
        if cls is not None and isinstance(e, cls):
            return code
    return None


def exit_for(task_name: str, e: BaseException) -> Exit | None:
    """The Exit a task ends with for ``e``, or None when ``e`` is not a user-facing error (a bug)."""
    if isinstance(e, (BadInput, InputError)):
        return Exit(f"{task_name}: {e}", code=2)
    code = _layer_error_code(e)
    if code is not None:
        return Exit(f"{task_name}: {e}", code=code)
    if isinstance(e, KeyboardInterrupt):
        return Exit(f"{task_name}: interrupted; what this task started has been stopped", code=130)
    return None


def guarded(**options: Opt) -> Callable[[F], F]:
    """Check the named options, then run the task body with every error sorted (see the module)."""

    def wrap(body: F) -> F:
        signature = inspect.signature(body)
        unknown = set(options) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{body.__name__}: guarded() names options it does not have: {sorted(unknown)}")

        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> Any:
            name = getattr(run, "task_name", body.__name__.replace("_", "-"))
            try:
                bound = signature.bind(*args, **kwargs)
                for opt, check in options.items():
                    bound.arguments[opt] = check.check(opt, bound.arguments.get(opt))
                return body(*bound.args, **bound.kwargs)
            except Exit:
                raise
            except BaseException as e:
                converted = exit_for(name, e)
                if converted is None:
                    raise
                raise converted from None

        run.guarded = True  # type: ignore[attr-defined]
        run.options = options  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return wrap
