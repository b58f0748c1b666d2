"""Every task in `invoke --list`, given a bad value: one line naming the option, exit 2, no traceback.

The tasks are discovered from the collection, so a new task (or a new option) is covered the
day it is added: each option needs a bad value in BAD_VALUES (or a reason in FREE_TEXT), and
the test fails naming the option until it has one.  As root, the tasks run as ``nobody``: a task
whose check is missing then fails for lack of privileges instead of really starting a testbed
or a machine, and the exit status (1, not 2) shows it.
"""

from __future__ import annotations

import copy
import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(TOP)]

#: option name → a value that option must refuse (shared by every task that has the option).
BAD_VALUES: dict[str, str] = {
    "accel": "xen",
    "also": "/etc/passwd",
    "arch": "amd65",
    "br": "not-an-address",
    "ce": "bsd",
    "cpus": "x",
    "ces": "abc",
    "ea_len": "x",
    "git": "-upload-pack=touch /tmp/x",
    "image": "../etc",
    "m": "unti",
    "memory": "-5",
    "mirror": "ftp:/nowhere",
    "name": "no/such",
    "node": "a b",
    "offset": "x",
    "option94": "zz",
    "out": "/nonexistent/dir/file",
    "patch": "a b",
    "pool": "nonsense",
    "prefix": "2001:db8::/129",
    "profile": "no/such",
    "pristine": "/nonexistent/pristine",
    "psid": "x",
    "psid_len": "x",
    "psid_wire": "x",
    "ref": "-x",
    "release": "9.9x",
    "rule_ipv4": "192.0.2.0/33",
    "rule_ipv6": "2001:db8::1/40",
    "run": "no-such-run",
    "scenario": "no-such-scenario",
    "series": "no/such",
    "src": "/nonexistent/src",
    "strip": "x",
    "tap": "mlq-no-such-tap",
    "topic": "a b",
    "tree": "/nonexistent/tree",
    "vm_slots": "a",
}
#: (task, option) → a bad value where the option means something else in that task.
BAD_FOR_TASK: dict[tuple[str, str], str] = {
    ("mape.calc", "br"): "2001:db8::zz",
    ("patch.apply", "out"): str(TOP),  # must not exist yet
    ("patch.plan", "patch"): "/nonexistent.diff",  # a patch file there, a patch name in patch.refresh
}
#: options whose every value is legitimate input for something else, and who judges it.
FREE_TEXT: dict[str, str] = {
    "k": "a pytest -k expression: pytest reports its own syntax errors",
    "args": "extra pytest arguments, passed through to pytest",
    "command": "any shell command, run in the guest",
}
#: other arguments a case needs so that the value under test is the only thing wrong.
NEEDS: dict[str, dict[str, str]] = {
    "testbed.shell": {"node": "isp"},  # a required positional
}
#: tasks whose only options are on/off flags, and the misuse each still refuses (None: there is none).
FLAGS_ONLY: dict[str, list[str] | None] = {
    "vm.build-linux": None,
    "vm.list": None,
    "vm.prune": ["--all"],  # --all means something only with --images
}


def _collection():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(TOP))
    try:
        return importlib.import_module("tasks").ns
    finally:
        sys.path.remove(str(TOP))


def all_tasks() -> dict[str, list[tuple[str, bool]]]:
    """task name → [(option, takes a value)] for every task in `invoke --list`."""
    ns = _collection()
    out = {}
    for name in ns.task_names:
        t = copy.copy(ns[name])
        t.help = dict(t.help)  # invoke's get_arguments() pops the help texts it uses
        out[name] = [(a.name, a.kind is not bool) for a in t.get_arguments()]
    return out


def cases() -> Iterator[tuple[str, str | None, list[str]]]:
    for name, options in sorted(all_tasks().items()):
        valued = [o for o, takes in options if takes and o not in FREE_TEXT]
        if not valued:
            extra = FLAGS_ONLY.get(name, "missing")
            if extra == "missing":
                yield name, "(add it to FLAGS_ONLY)", []
            elif extra is not None:
                yield name, None, extra
            continue
        for opt in valued:
            value = BAD_FOR_TASK.get((name, opt), BAD_VALUES.get(opt))
            if value is None:
                yield name, opt, []  # reported by the test: no bad value known for this option
                continue
            flag = f"-{opt}" if len(opt) == 1 else "--" + opt.replace("_", "-")
            others = [x for o, v in NEEDS.get(name, {}).items() if o != opt for x in ("--" + o, v)]
            yield name, opt, [*others, flag, value]


CASES = list(cases())


def _as_nobody() -> None:
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


def _run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAPELAB_CACHE": str(home / "cache"), "MAPELAB_RUNS": str(home / "runs"),
           "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MAPELAB_OPENBSD_SRC", None)
    return subprocess.run([*INVOKE, *argv], capture_output=True, text=True, timeout=120, env=env, cwd=str(TOP),
                          preexec_fn=_as_nobody if os.geteuid() == 0 else None)


@pytest.fixture(scope="module")
def results() -> Iterator[dict[tuple[str, str | None], subprocess.CompletedProcess[str]]]:
    # Not under pytest's tmp_path: its parents are 0700, which nobody cannot enter.
    with tempfile.TemporaryDirectory(prefix="mapelab-task-errors.") as td:
        home = Path(td)
        home.chmod(0o777)
        runnable = [(t, o, a) for t, o, a in CASES if a]
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = list(pool.map(lambda c: _run([c[0], *c[2]], home), runnable))
        yield {(t, o): r for (t, o, _), r in zip(runnable, done, strict=True)}


@pytest.mark.parametrize(("task", "option", "argv"), CASES, ids=[f"{t}:{o}" for t, o, _ in CASES])
def test_bad_value_is_one_line_exit_2(task: str, option: str | None, argv: list[str],
                                      results: dict[tuple[str, str | None], subprocess.CompletedProcess[str]]) -> None:
    assert option != "(add it to FLAGS_ONLY)", f"{task} has no option taking a value: list it in FLAGS_ONLY"
    assert argv, f"{task} --{option}: no bad value known; add one to BAD_VALUES (or a reason to FREE_TEXT)"
    r = results[(task, option)]
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, f"{task} {argv}: traceback\n{r.stderr}"
    assert r.returncode == 2, f"{task} {argv}: exit {r.returncode}, want 2\n{r.stdout}\n{r.stderr}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{task} {argv}: {len(lines)} lines on stderr, want 1:\n{err}"
    assert lines[0].startswith(f"{task}: "), lines[0]
    named = argv[-2] if option is not None else argv[0]
    assert named in lines[0], f"{task}: the message does not name {named}: {lines[0]}"


def test_every_task_is_guarded() -> None:
    """One error path: every task body goes through mapelab.tasks._guard.guarded."""
    ns = _collection()
    unguarded = [n for n in ns.task_names if not getattr(ns[n].body, "guarded", False)]
    assert not unguarded, f"tasks without @guarded: {unguarded}"
    assert ns["vm.boot-linux"].body.task_name == "vm.boot-linux"


def test_the_table_has_no_stale_entries() -> None:
    """A value for an option no task has any more would hide a rename."""
    options = {o for opts in all_tasks().values() for o, _ in opts}
    assert set(BAD_VALUES) <= options, set(BAD_VALUES) - options
    assert set(FLAGS_ONLY) <= set(all_tasks())
