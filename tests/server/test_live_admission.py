"""Requests admitted while the generation loop runs: the loop takes them at its next step
without pausing for the IOLoop, trims a reused slot's KV itself, and every result is the one
the request gets on a quiet server."""
from __future__ import annotations

import pytest
import requests

from helpers import metrics, wait_for

PROMPTS = ["The capital of France is", "The capital of France is a city where", "def fibonacci(n):",
           "The capital of France is a city where people"]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "6144", "-np", "3", "-t", "1", "--metrics")


def complete(server, prompt: str) -> str:
    r = server.post("/completion", json={"prompt": prompt, "n_predict": 12, "temperature": 0, "cache_prompt": True},
                    timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["content"]


def test_requests_join_a_running_loop_without_pausing_it(server):
    alone = [complete(server, p) for p in PROMPTS]
    # a stream that never ends by itself (ignore_eos, no limit: context shifts) keeps the loop running
    with requests.post(server.url + "/completion", stream=True, timeout=120,
                       json={"prompt": "Count from one to a million:", "n_predict": -1, "ignore_eos": True,
                             "temperature": 0, "stream": True}) as long:
        assert long.status_code == 200
        lines = long.iter_lines()     # kept: a dropped iterator closes the connection
        assert next(lines).startswith(b"data: ")
        runs = metrics(server)["llamacy:engine_runs_total"]
        # one after another on the two other slots: later prompts reuse a slot's prefix (KV trimmed by the loop)
        got = [complete(server, p) for p in PROMPTS]
        m = metrics(server)
        assert m["llamacpp:requests_processing"] == 1          # the stream still runs
        assert m["llamacy:engine_runs_total"] == runs          # and the loop never paused for the others
    assert got == alone
    wait_for(lambda: metrics(server)["llamacpp:requests_processing"] == 0, "the stream to end after the client left")
