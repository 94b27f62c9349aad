"""POST /completion against the real server and the default model."""
from __future__ import annotations

import pytest

from helpers import sse_events

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", "2")


def complete(server, **body):
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 16, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_result_has_every_spec_field(server):
    res = complete(server)
    for key in ("content", "stop", "generation_settings", "model", "prompt", "stopped_eos", "stopped_limit",
                "stopped_word", "stopping_word", "timings", "tokens_cached", "tokens_evaluated", "truncated",
                "tokens_predicted", "id_slot"):
        assert key in res, key
    assert res["stop"] is True and res["stopped_limit"] is True
    assert res["tokens_predicted"] == 16
    assert res["prompt"] == PROMPT
    assert "Paris" in res["content"]
    gs = res["generation_settings"]
    assert gs["n_predict"] == 16 and gs["temperature"] == 0 and gs["n_ctx"] == 1024
    assert res["timings"]["predicted_n"] == 16 and res["timings"]["predicted_per_second"] > 0


def test_greedy_is_deterministic(server):
    assert complete(server)["content"] == complete(server)["content"]


def test_stream_equals_non_stream(server):
    plain = complete(server, n_predict=24)["content"]
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 24, "temperature": 0, "stream": True},
                    stream=True)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1]["stop"] is True and "timings" in events[-1]
    for ev in events[:-1]:
        assert set(ev) <= {"content", "stop", "id_slot", "multimodal", "completion_probabilities"}
        assert ev["stop"] is False
    assert "".join(ev["content"] for ev in events) == plain


def test_prompt_as_tokens_and_mixed_array(server):
    tokens = server.post("/tokenize", json={"content": PROMPT}).json()["tokens"]
    by_text = complete(server)["content"]
    assert complete(server, prompt=tokens)["content"] == by_text
    head = server.post("/tokenize", json={"content": "The capital"}).json()["tokens"]
    mixed = head + [" of France is"]
    res = complete(server, prompt=mixed)
    assert res["tokens_evaluated"] == len(head) + len(
        server.post("/tokenize", json={"content": " of France is"}).json()["tokens"])


def test_n_predict_zero_evaluates_prompt_only(server):
    res = complete(server, n_predict=0)
    assert res["content"] == "" and res["tokens_predicted"] == 0
    assert res["tokens_evaluated"] > 0


def test_stop_word_is_excluded(server):
    full = complete(server, n_predict=24)["content"]
    word = full.split()[2]
    res = complete(server, n_predict=24, stop=[word])
    assert res["stopped_word"] is True and res["stopping_word"] == word
    assert word not in res["content"]
    assert full.startswith(res["content"])


def test_stop_word_never_leaks_in_stream(server):
    full = complete(server, n_predict=24)["content"]
    word = full.split()[2]
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 24, "temperature": 0, "stream": True,
                                         "stop": [word]}, stream=True)
    events = sse_events(r)
    text = "".join(ev["content"] for ev in events)
    assert word not in text and events[-1]["stopped_word"] is True


def test_n_probs(server):
    res = complete(server, n_probs=3, n_predict=4)
    probs = res["completion_probabilities"]
    assert len(probs) == 4
    for item in probs:
        assert len(item["probs"]) == 3
        ps = [p["prob"] for p in item["probs"]]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1.0001
        # greedy: the chosen token is the most likely one
        assert item["content"] == item["probs"][0]["tok_str"]


def test_logit_bias_false_bans_token(server):
    first = complete(server, n_predict=1)["content"]
    tok = server.post("/tokenize", json={"content": first}).json()["tokens"][0]
    res = complete(server, n_predict=1, logit_bias=[[tok, False]])
    assert res["content"] != first
    res2 = complete(server, n_predict=1, logit_bias=[[first, False]])
    assert res2["content"] != first


def test_seed_reproduces(server):
    body = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "n_predict": 24}
    a = complete(server, seed=42, **body)["content"]
    b = complete(server, seed=42, **body)["content"]
    assert a == b
    others = {complete(server, seed=s, **body)["content"] for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_ignore_eos_generates_to_limit(server):
    res = complete(server, prompt="<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n", n_predict=48,
                   ignore_eos=True)
    assert res["tokens_predicted"] == 48 and not res["stopped_eos"]


def test_eos_stops(server):
    (eot,) = server.post("/tokenize", json={"content": "<|im_end|>"}).json()["tokens"]
    res = complete(server, n_predict=50, logit_bias=[[eot, 100.0]])
    assert res["stopped_eos"] is True and res["stopped_limit"] is False
    assert res["tokens_predicted"] == 1 and res["content"] == ""
    res = complete(server, n_predict=20, logit_bias=[[eot, 100.0]], ignore_eos=True)
    assert res["stopped_eos"] is False and res["tokens_predicted"] == 20


def test_cache_prompt_reuses_prefix(server):
    body = {"cache_prompt": True, "id_slot": 1, "n_predict": 4}
    complete(server, prompt=PROMPT + " a city", **body)
    res = complete(server, prompt=PROMPT + " a city with", **body)
    n_prompt = len(server.post("/tokenize", json={"content": PROMPT + " a city with"}).json()["tokens"])
    assert res["id_slot"] == 1
    assert res["timings"]["prompt_n"] < n_prompt
    assert res["tokens_evaluated"] == n_prompt


def test_cache_prompt_gives_same_output(server):
    body = {"cache_prompt": True, "id_slot": 0, "n_predict": 12}
    a = complete(server, **body)["content"]
    b = complete(server, **body)["content"]
    assert a == b == complete(server, n_predict=12)["content"]


def test_id_slot_pins(server):
    assert complete(server, id_slot=1, n_predict=2)["id_slot"] == 1
    assert complete(server, id_slot=0, n_predict=2)["id_slot"] == 0


def test_samplers_order_and_options_accepted(server):
    res = complete(server, temperature=0.7, samplers=["min_p", "top_k", "temperature"], tfs_z=0.9, typical_p=0.9,
                   mirostat=0, dynatemp_range=0.2, penalty_prompt="capital", repeat_last_n=-1, penalize_nl=False,
                   presence_penalty=0.1, frequency_penalty=0.1, min_keep=1, n_keep=2, seed=3)
    gs = res["generation_settings"]
    assert gs["samplers"] == ["min_p", "top_k", "temperature"]
    assert gs["use_penalty_prompt_tokens"] is True and gs["penalty_prompt_tokens"]
    for mode in (1, 2):
        assert complete(server, temperature=0.8, mirostat=mode, seed=1)["tokens_predicted"] == 16


def test_grammar_constrains_output(server):
    res = complete(server, grammar='root ::= ("yes" | "no") "."', n_predict=8)
    assert res["content"] in ("yes.", "no.")


def test_bad_grammar_is_400(server):
    r = server.post("/completion", json={"prompt": "x", "grammar": "root ::= ("})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": 400, "message": "Failed to parse grammar", "type": "invalid_request_error"}}


def test_multibyte_utf8_is_never_split(server):
    r = server.post("/completion", json={"prompt": "Write three emoji: 😀", "n_predict": 24, "temperature": 0,
                                         "stream": True}, stream=True)
    events = sse_events(r)
    for ev in events:
        assert "\ufffd" not in ev["content"]


def test_finished_grammar_with_eos_banned_ends_cleanly(server):
    res = complete(server, grammar='root ::= "yes"', ignore_eos=True, n_predict=20, temperature=0.8)
    assert res["content"] == "yes" and res["stopped_eos"] is True
    res = complete(server, grammar='root ::= "yes"', ignore_eos=True, n_predict=20)
    assert res["content"] == "yes"
    assert server.get("/health").json()["slots_idle"] == 2


def test_bad_grammar_is_400_when_streaming_too(server):
    r = server.post("/completion", json={"prompt": "x", "grammar": "root ::= (", "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Failed to parse grammar"


def test_generation_settings_n_predict_is_capped_by_server_limit(server_factory):
    srv = server_factory("-c", "256", "-n", "5")
    for asked, effective in ((100, 5), (-1, 5), (None, 5), (3, 3)):
        body = {"prompt": "Count: 1, 2, 3,", "temperature": 0, "ignore_eos": True}
        if asked is not None:
            body["n_predict"] = asked
        r = srv.post("/completion", json=body)
        assert r.status_code == 200
        out = r.json()
        assert out["generation_settings"]["n_predict"] == effective
        assert out["tokens_predicted"] == effective
    assert srv.get("/props").json()["default_generation_settings"]["n_predict"] == 5
