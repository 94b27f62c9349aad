"""/infill on a model without FIM tokens (the default model) answers a clear 400."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "1024")


def test_infill_without_fim_tokens_is_400(server):
    r = server.post("/infill", json={"input_prefix": "def f(", "input_suffix": "    return x\n"})
    assert r.status_code == 400
    assert "FIM" in r.json()["error"]["message"]
    assert server.get("/health").json()["slots_idle"] == 1
