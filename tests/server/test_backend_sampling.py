"""--backend-sampling: each output's best candidates selected inside the decode graph, the rest
of the chain on the host over them; a greedy request's argmax taken there after its logit bias
and penalties. Every result must be the one the host-only server gives —
greedy and seeded sampling token for token, stop strings, n_probs, grammars — whatever the
neighbouring slots do, and requests that need the whole row (n_probs, a grammar) get it."""
from __future__ import annotations

import pytest

from helpers import metrics, run_in_threads

SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1,
           "repeat_last_n": 64}
REQUESTS = [
    {"prompt": "The capital of France is", "n_predict": 24, "temperature": 0},
    {"prompt": "Once upon a time", "n_predict": 32, "seed": 42, **SAMPLED},
    {"prompt": "def fibonacci(n):", "n_predict": 32, "seed": 7, "temperature": 1.0},
    {"prompt": "List three colours:", "n_predict": 40, "temperature": 0, "stop": ["legs", "4."]},
    {"prompt": "Write a haiku about the sea.", "n_predict": 24, "seed": 3, "ignore_eos": True, **SAMPLED},
    {"prompt": "My favourite food is", "n_predict": 16, "temperature": 0, "logit_bias": [[13, False], [28, -2.5]]},
]
WHOLE_ROW = [   # need every logit: sampled from their whole row on the same server
    {"prompt": "The capital of France is", "n_predict": 8, "temperature": 0, "n_probs": 3},
    {"prompt": "Answer yes or no:", "n_predict": 8, "temperature": 0, "grammar": 'root ::= ("yes" | "no") "."'},
    {"prompt": "Once upon a time", "n_predict": 8, "seed": 5, "temperature": 0.7, "top_k": 0},
]
FIELDS = ("content", "tokens_predicted", "stop_type", "stopping_word", "completion_probabilities")


@pytest.fixture(scope="module")
def host(server_factory):
    return server_factory("-c", "2048", "-np", "4", "-t", "1", "--metrics", "--no-backend-sampling")


@pytest.fixture(scope="module")
def device(server_factory):
    return server_factory("-c", "2048", "-np", "4", "-t", "1", "--metrics", "--backend-sampling")


def complete(server, body: dict) -> dict:
    r = server.post("/completion", json=body, timeout=120)
    assert r.status_code == 200, r.text
    d = r.json()
    return {k: d.get(k) for k in FIELDS}


def test_the_same_results_as_sampling_on_the_host(host, device):
    before = metrics(device)
    want = [complete(host, b) for b in REQUESTS]
    got = [complete(device, b) for b in REQUESTS]
    assert got == want
    assert any(w["stop_type"] == "word" for w in want)        # a stop string ended one of them
    after = metrics(device)
    outputs = after["llamacy:engine_outputs_total"] - before["llamacy:engine_outputs_total"]
    on_device = after["llamacy:engine_device_outputs_total"] - before["llamacy:engine_device_outputs_total"]
    assert outputs == sum(w["tokens_predicted"] for w in want)
    assert on_device == outputs                                  # every one of them on the device
    # one request at a time: every step's device results came back in one copy per kind
    assert (after["llamacy:engine_device_one_copy_outputs_total"]
            - before["llamacy:engine_device_one_copy_outputs_total"]) == on_device
    greedy_on_device = (after["llamacy:engine_device_greedy_outputs_total"]
                        - before["llamacy:engine_device_greedy_outputs_total"])
    assert greedy_on_device == sum(w["tokens_predicted"] for w, b in zip(want, REQUESTS) if b["temperature"] == 0)
    assert metrics(host)["llamacy:engine_device_outputs_total"] == 0


def test_the_same_results_with_neighbours(host, device):
    """Seeded sampling is reproducible per slot: four requests at once give what each gives alone."""
    want = [complete(host, b) for b in REQUESTS[:4]]
    got: dict = {}
    run_in_threads(lambda i: got.setdefault(i, complete(device, REQUESTS[i])), [(i,) for i in range(4)])
    assert [got[i] for i in range(4)] == want


def test_requests_that_need_the_whole_row_get_it(host, device):
    before = metrics(device)
    want = [complete(host, b) for b in WHOLE_ROW]
    bodies = WHOLE_ROW + REQUESTS[:1]          # and a request after them is back on the device
    got = [complete(device, b) for b in bodies]
    assert got[:3] == want
    assert got[3] == complete(host, REQUESTS[0])
    assert len(want[0]["completion_probabilities"]) == 8
    assert want[1]["content"] in ("yes.", "no.")
    after = metrics(device)
    on_device = after["llamacy:engine_device_outputs_total"] - before["llamacy:engine_device_outputs_total"]
    assert on_device == got[3]["tokens_predicted"]
    # each whole-row request detached its slot's chain, the last one attached it again
    assert after["llamacy:engine_device_switches_total"] > before["llamacy:engine_device_switches_total"]
