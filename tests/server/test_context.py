"""Small contexts: prompt truncation, context shift, n_keep."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "256", "-np", "1")


LONG = " ".join(f"word{i}" for i in range(300))


def test_long_prompt_is_truncated(server):
    r = server.post("/completion", json={"prompt": LONG, "n_predict": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["truncated"] is True
    assert res["tokens_evaluated"] < res["generation_settings"]["n_ctx"]


def test_context_shift_keeps_generating(server):
    r = server.post("/completion", json={"prompt": "Count: 1, 2, 3,", "n_predict": 400, "temperature": 0,
                                         "ignore_eos": True, "n_keep": 4}, timeout=600)
    res = r.json()
    assert res["tokens_predicted"] == 400
    assert res["truncated"] is True
    assert res["tokens_cached"] <= res["generation_settings"]["n_ctx"]


def test_n_predict_flag_caps_requests(server_factory):
    srv = server_factory("-c", "256", "-n", "5")
    res = srv.post("/completion", json={"prompt": "Hello", "n_predict": 50, "ignore_eos": True}).json()
    assert res["tokens_predicted"] == 5
    res = srv.post("/completion", json={"prompt": "Hello", "ignore_eos": True}).json()
    assert res["tokens_predicted"] == 5


def test_self_extend_generates_past_the_window(server_factory):
    srv = server_factory("-c", "1024", "--grp-attn-n", "4", "--grp-attn-w", "64")
    res = srv.post("/completion", json={"prompt": LONG[:600], "n_predict": 200, "temperature": 0,
                                        "ignore_eos": True}).json()
    assert res["tokens_predicted"] == 200
    assert res["truncated"] is False
    plain = srv.post("/completion", json={"prompt": "Hello", "n_predict": 8, "temperature": 0}).json()
    assert plain["tokens_predicted"] == 8


def test_self_extend_rejects_bad_width(server_factory):
    from helpers import ServerProcess
    srv = ServerProcess("-c", "512", "--grp-attn-n", "3", "--grp-attn-w", "64", wait=False)
    try:
        assert srv.proc.wait(60) != 0
        assert "multiple" in srv.log()
    finally:
        srv.stop()
