"""The invoke layer: thin functions that parse options, call the library and print.

Each module here defines ``collection`` (an invoke Collection added under the module's name,
e.g. ``mape.calc``) and/or ``root_tasks`` (tasks at the top level, e.g. ``test``).  Every task
body goes through :func:`mapelab.tasks._guard.guarded` (one error path: bad input exits 2 with
one line, a failure of work exits 1); ``tests/unit/test_task_errors.py`` holds every task in
``invoke --list`` to it.  Nothing in the library imports this package.
"""

from __future__ import annotations

import importlib
import pkgutil

from invoke import Collection


def build_collection() -> Collection:
    root = Collection()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for task in getattr(module, "root_tasks", []):
            root.add_task(task)
        sub = getattr(module, "collection", None)
        if sub is not None:
            root.add_collection(sub)
    for name in root.task_names:
        body = root[name].body
        if getattr(body, "guarded", False):
            body.task_name = name  # messages start with the name the user typed: "vm.boot-linux: …"
    return root
