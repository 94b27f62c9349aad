"""Faults injected into the loop (a test-only hook) stay in their step: the request that met
one gets a 500 naming it, the loop goes on, and an engine that keeps failing is reported."""
from __future__ import annotations

import re

import pytest
import requests

from helpers import metrics, quiescent, sse_events, wait_for

FAULTS = {"LLAMACY_TEST_FAULTS": "1"}
BODY = {"prompt": "The capital of France is Paris. The capital of Italy is", "n_predict": 8, "temperature": 0}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "1024", "-np", "2", "-t", "1", "--metrics", "--embeddings", env=FAULTS)


@pytest.fixture(scope="module")
def reference(server):
    r = server.post("/completion", json=BODY)
    assert r.status_code == 200, r.text
    return r.json()["content"]


def arm(server, point, kind, count=1, min_tokens=0):
    r = server.post("/test/faults", json={"point": point, "kind": kind, "count": count, "min_tokens": min_tokens})
    assert r.status_code == 200, r.text


def error_of(r, status=500) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["message"]


def test_fault_route_exists_only_when_enabled(server_factory):
    plain = server_factory("-c", "256", "-np", "1", "-t", "1")
    assert plain.post("/test/faults", json={"point": "decode", "kind": "error"}).status_code == 404


@pytest.mark.parametrize("kind, name", [("error", "InjectedFault"), ("memory", "MemoryError")])
def test_a_failed_decode_fails_only_its_request(server, reference, kind, name):
    arm(server, "decode", kind)
    assert name in error_of(server.post("/completion", json=BODY))
    again = server.post("/completion", json=BODY)
    assert again.status_code == 200, again.text
    assert again.json()["content"] == reference
    wait_for(lambda: quiescent(server), "the server to be idle")
    assert server.get("/health").json()["status"] == "ok"


def test_a_failed_decode_ends_a_stream_with_an_error_event(server, reference):
    arm(server, "decode", "error")
    r = server.post("/completion", json={**BODY, "stream": True}, stream=True)
    assert r.status_code == 200
    events = sse_events(r)
    assert "InjectedFault" in events[-1]["error"]["message"]
    assert events[-1]["error"]["code"] == 500
    assert server.post("/completion", json=BODY).json()["content"] == reference


def test_a_failed_publish_fails_its_request_and_the_loop_goes_on(server, reference):
    arm(server, "publish", "error")
    assert "publishing results" in error_of(server.post("/completion", json=BODY))
    assert server.post("/completion", json=BODY).json()["content"] == reference


def test_a_failed_embedding_batch_fails_its_request(server):
    ok = server.post("/embedding", json={"content": "hello"})
    assert ok.status_code == 200
    arm(server, "embed", "error")
    assert "embedding step" in error_of(server.post("/embedding", json={"content": "hello"}))
    again = server.post("/embedding", json={"content": "hello"})
    assert again.json()["embedding"] == ok.json()["embedding"]


def test_no_kv_room_retries_in_smaller_pieces(server, reference):
    """llama_decode answering 'no KV slot' (return code 1) for batches over 4 tokens: the step
    is decoded in pieces and gives the same tokens."""
    arm(server, "decode", "no_kv", count=-1, min_tokens=4)
    try:
        r = server.post("/completion", json=BODY)
        assert r.status_code == 200, r.text
        assert r.json()["content"] == reference
    finally:
        assert server.post("/test/faults", json={"disarm": True}).status_code == 200
    pieces = re.findall(r"no KV room for a batch of (\d+) tokens: decoded in pieces of at most (\d+)", server.log())
    assert pieces and all(int(n) > 4 >= int(m) for n, m in pieces), pieces


def test_failed_steps_are_counted(server):
    m = metrics(server)
    assert m["llamacy:failed_steps_total"] >= 5
    assert m[("llamacy:requests_rejected_total", "server_error")] >= 4


def test_an_engine_that_keeps_failing_is_reported_and_refuses_work(server_factory):
    srv = server_factory("-c", "256", "-np", "1", "-t", "1", env=FAULTS)
    arm(srv, "decode", "error", count=-1)
    for _ in range(3):
        assert "InjectedFault" in error_of(srv.post("/completion", json=BODY))
    health = srv.get("/health")
    assert health.status_code == 500
    assert health.json()["status"] == "error"
    assert "3 steps failed in a row" in health.json()["error"]
    message = error_of(srv.post("/completion", json=BODY), 503)
    assert "the engine is unusable" in message
    assert srv.get("/slots").status_code == 503
