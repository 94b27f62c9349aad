"""A pytest plugin for tools/upstream_suite.py: run only the tests named in the file at
``$UPSTREAM_SELECT`` (one ``test_FILE.py::name[params]`` a line), deselecting the rest, so CI
runs just the baseline (a test id that no longer exists is simply not run; the runner reports
it missing)."""
from __future__ import annotations

import os


def pytest_collection_modifyitems(config, items) -> None:
    path = os.environ.get("UPSTREAM_SELECT")
    if not path:
        return
    with open(path, encoding="utf-8") as f:
        wanted = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    keep, drop = [], []
    for item in items:
        test_id = f"{os.path.basename(item.nodeid.split('::', 1)[0])}::{item.nodeid.split('::', 1)[1]}"
        (keep if test_id in wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
