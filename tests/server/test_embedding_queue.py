"""Embedding requests are bounded (--max-embedding-inputs) and share the engine with generation:
a big embedding request and a completion both make progress, neither waits for the other."""
from __future__ import annotations

import threading
import time

import pytest

from helpers import metrics, wait_for

SENTENCE = "This sentence is one of many that a client sends to be embedded in a single request, number {}."


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "1024", "-np", "2", "-t", "1", "--embeddings", "--metrics",
                          "--max-embedding-inputs", "3000")


def test_more_inputs_than_the_limit_is_400(server):
    r = server.post("/v1/embeddings", json={"input": ["x"] * 3001})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "3001 inputs" in message and "--max-embedding-inputs" in message
    r = server.post("/embedding", json={"content": ["x"] * 3001})
    assert r.status_code == 400, r.text


def test_many_inputs_in_one_request_are_all_embedded_in_order(server):
    inputs = [SENTENCE.format(i) for i in range(100)]   # 13 steps of up to 8 inputs
    r = server.post("/v1/embeddings", json={"input": inputs}, timeout=600)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(100))
    for i in (0, 37, 99):   # each vector is its input's, bit for bit, whatever shared its step
        alone = server.post("/v1/embeddings", json={"input": inputs[i]}).json()["data"][0]["embedding"]
        assert alone == data[i]["embedding"]


def test_a_completion_is_not_starved_by_a_big_embedding_request(server):
    """The completion arrives while the embedding request is being worked on, and finishes first:
    the scheduler runs a generation step between embedding steps (before, it waited for all
    the inputs: here 400 short ones, 8 per step, each decoded alone)."""
    done: dict[str, float] = {}
    errors: list[BaseException] = []

    def embed():
        try:
            r = server.post("/v1/embeddings", json={"input": [f"word {i}" for i in range(400)]}, timeout=600)
            assert r.status_code == 200, r.text
            done["embedding"] = time.monotonic()
        except BaseException as exc:   # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    t = threading.Thread(target=embed)
    t.start()
    try:
        wait_for(lambda: metrics(server)["llamacpp:requests_deferred"] == 1, "the embedding request to be queued")
        r = server.post("/completion", json={"prompt": "One, two, three,", "n_predict": 8, "temperature": 0})
        assert r.status_code == 200, r.text
        done["completion"] = time.monotonic()
        assert metrics(server)["llamacpp:requests_deferred"] == 1   # the embedding request is still running
    finally:
        t.join()
    if errors:
        raise errors[0]
    assert done["completion"] < done["embedding"]
