"""Shared fixtures (helpers live in helpers.py, importable because this directory is on sys.path)."""
from __future__ import annotations

import pytest

from helpers import ServerProcess


@pytest.fixture(scope="module")
def server_factory():
    """Start servers with custom flags; all are stopped when the module's tests end."""
    started: list[ServerProcess] = []

    def start(*args: str, **kw) -> ServerProcess:
        srv = ServerProcess(*args, **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
