"""DRY, XTC and top-n-sigma through the real server: /completion, the OpenAI routes, /props."""
from __future__ import annotations

import math

import pytest

PROMPT = "The capital of France is"
LIST_PROMPT = "A list: apple, banana, apple, banana, apple, banana, apple,"
SPEC_SAMPLERS = ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"]
NEW_DEFAULTS = {"xtc_probability": 0.0, "xtc_threshold": 0.1, "top_n_sigma": -1.0, "dry_multiplier": 0.0,
                "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
                "dry_sequence_breakers": ["\n", ":", "\"", "*"]}
DRY = {"dry_multiplier": 1000.0, "dry_allowed_length": 2, "dry_sequence_breakers": ["\u00a7\u00a7"]}
N_CTX = 1024


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", str(N_CTX), "-np", "1", "-t", "1")


def complete(server, **body) -> dict:
    body = {"prompt": PROMPT, "n_predict": 12, "temperature": 0, "repeat_penalty": 1.0, **body}
    r = server.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_props_and_generation_settings_show_the_options(server):
    gs = server.get("/props").json()["default_generation_settings"]
    assert {k: gs[k] for k in NEW_DEFAULTS} == NEW_DEFAULTS
    assert gs["samplers"] == ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"]   # the spec's
    # a request that turns the newer samplers on without naming samplers gets them at llama.cpp's places
    on = complete(server, n_predict=1, xtc_probability=0.5, top_n_sigma=2.0, dry_multiplier=0.5)
    assert on["generation_settings"]["samplers"] == ["dry", "top_n_sigma", "top_k", "tfs_z", "typical_p", "top_p",
                                                     "min_p", "xtc", "temperature"]
    assert complete(server, n_predict=1, xtc_probability=0.5)["generation_settings"]["samplers"] == [
        "top_k", "tfs_z", "typical_p", "top_p", "min_p", "xtc", "temperature"]
    opts = {"xtc_probability": 0.25, "xtc_threshold": 0.2, "top_n_sigma": 1.5, "dry_multiplier": 0.8,
            "dry_base": 2.0, "dry_allowed_length": 3, "dry_penalty_last_n": 128, "dry_sequence_breakers": ["\n", "."],
            "samplers": ["dry", "xtc", "top_n_sigma", "temperature"]}
    res = complete(server, n_predict=2, **opts)
    assert {k: res["generation_settings"][k] for k in opts} == opts
    # -1 is the slot's context size, as for repeat_last_n
    assert complete(server, n_predict=1)["generation_settings"]["dry_penalty_last_n"] == N_CTX


@pytest.mark.parametrize("temperature, seed", [(0, 0), (0.8, 42), (1.2, 5)])
def test_default_output_unchanged(server, temperature, seed):
    body = {"temperature": temperature, "seed": seed, "repeat_penalty": 1.1, "n_predict": 16}
    default = complete(server, **body)["content"]
    assert complete(server, samplers=SPEC_SAMPLERS, **body)["content"] == default
    assert complete(server, **body, **NEW_DEFAULTS)["content"] == default


def _continues_the_list(text: str) -> bool:
    """Whether ``text`` goes on with LIST_PROMPT's alternation: its next item, or a run of it
    (what DRY penalises: extending a sequence already seen at least dry_allowed_length long;
    the words alone may come back, e.g. "apple, banana" after a line break, whose tokens differ)."""
    return text.startswith(" banana") or "banana, apple" in text or ", apple, banana" in text


def test_dry_stops_the_repetition_greedy_produces(server):
    plain = complete(server, prompt=LIST_PROMPT, n_predict=16)["content"]
    assert plain.startswith(" banana, apple, banana, apple"), plain   # the premise: greedy repeats the list
    dry = complete(server, prompt=LIST_PROMPT, n_predict=16, **DRY)["content"]
    assert _continues_the_list(plain) and not _continues_the_list(dry), dry


def test_dry_sequence_breakers_reach_the_sampler(server):
    """',' as a breaker cuts every repeated run of the list to one token: DRY then changes nothing."""
    plain = complete(server, prompt=LIST_PROMPT, n_predict=12)["content"]
    assert complete(server, prompt=LIST_PROMPT, n_predict=12, **{**DRY, "dry_sequence_breakers": [","]})[
        "content"] == plain


def test_dry_off_unless_named_in_samplers(server):
    plain = complete(server, prompt=LIST_PROMPT, n_predict=12)["content"]
    assert complete(server, prompt=LIST_PROMPT, n_predict=12, samplers=SPEC_SAMPLERS, **DRY)["content"] == plain


def _xtc_threshold(probs: list[dict]) -> float:
    """A threshold with exactly the two most likely tokens at or above it."""
    p = [x["prob"] for x in probs]
    assert p[1] > p[2] * 1.2, p
    return (p[1] + p[2]) / 2


def test_xtc_moves_off_the_top_token(server):
    first = complete(server, n_predict=1, n_probs=3)
    probs = first["completion_probabilities"][0]["probs"]
    assert first["content"] == probs[0]["tok_str"]
    res = complete(server, n_predict=1, xtc_probability=1.0, xtc_threshold=_xtc_threshold(probs))
    assert res["content"] == probs[1]["tok_str"] != probs[0]["tok_str"]
    # with probability 0 XTC never fires
    assert complete(server, n_predict=1, xtc_probability=0.0, xtc_threshold=0.01)["content"] == probs[0]["tok_str"]


def test_small_top_n_sigma_reduces_to_the_top_token(server):
    greedy = complete(server)["content"]
    loose = {"temperature": 2.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert any(complete(server, seed=s, **loose)["content"] != greedy for s in range(3))
    for seed in range(3):
        assert complete(server, seed=seed, top_n_sigma=0.001, **loose)["content"] == greedy


def test_openai_completions_accept_the_options(server):
    def text(**body):
        r = server.post("/v1/completions", json={"prompt": LIST_PROMPT, "max_tokens": 16, "temperature": 0,
                                                 "repeat_penalty": 1.0, **body})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    assert text().startswith(" banana, apple")
    assert not _continues_the_list(text(**DRY))
    assert text(top_n_sigma=0.001, temperature=2.0, top_k=0, top_p=1.0, min_p=0.0, seed=3) == text()


def test_openai_chat_accepts_the_options(server):
    messages = [{"role": "user", "content": "Name a colour."}]

    def first(**body):
        r = server.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1, "temperature": 0,
                                                      **body})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    top = first(logprobs=True, top_logprobs=3)["logprobs"]["content"][0]["top_logprobs"]
    probs = [{"tok_str": t["token"], "prob": math.exp(t["logprob"])} for t in top]
    assert first()["message"]["content"] == probs[0]["tok_str"]
    moved = first(xtc_probability=1.0, xtc_threshold=_xtc_threshold(probs))["message"]["content"]
    assert moved == probs[1]["tok_str"]


BAD = [
    ("xtc_probability", 1.5, "'xtc_probability' must be in [0.0, 1.0], got 1.5"),
    ("xtc_probability", "x", "'xtc_probability' must be a finite number, got str: 'x'"),
    ("xtc_threshold", -0.1, "'xtc_threshold' must be in [0.0, 1.0], got -0.1"),
    ("top_n_sigma", -2, "'top_n_sigma' must be in [-1.0, 10000.0], got -2.0"),
    ("top_n_sigma", [1], "'top_n_sigma' must be a finite number, got list: '[1]'"),
    ("dry_multiplier", -1, "'dry_multiplier' must be in [0.0, 10000.0], got -1.0"),
    ("dry_base", 0.5, "'dry_base' must be in [1.0, 10000.0], got 0.5"),
    ("dry_allowed_length", -1, "'dry_allowed_length' must be in [0, 1048576], got -1"),
    ("dry_allowed_length", 1.5, "'dry_allowed_length' must be an integer, got float: '1.5'"),
    ("dry_penalty_last_n", -2, "'dry_penalty_last_n' must be in [-1, 1048576], got -2"),
    ("dry_sequence_breakers", [], "'dry_sequence_breakers' must be a non-empty array of strings"),
    ("dry_sequence_breakers", "\n", "'dry_sequence_breakers' must be a non-empty array of strings"),
    ("dry_sequence_breakers", ["\n", 1], "'dry_sequence_breakers' must be a non-empty array of strings"),
    ("dry_sequence_breakers", [""], "'dry_sequence_breakers' items must be 1 to 40 bytes of UTF-8 without NUL, "
                                    "got ''"),
    ("dry_sequence_breakers", ["x" * 41], "'dry_sequence_breakers' items must be 1 to 40 bytes of UTF-8 without "
                                          "NUL, got '" + "x" * 41 + "'"),
    ("dry_sequence_breakers", ["a\x00b"], "'dry_sequence_breakers' items must be 1 to 40 bytes of UTF-8 without "
                                          "NUL, got 'a\\x00b'"),
    ("dry_sequence_breakers", ["."] * 17, "'dry_sequence_breakers' has more than 16 items"),
    ("samplers", ["dry", "nope"], "unknown sampler 'nope' in 'samplers'; known: dry, min_p, temperature, tfs_z, "
                                  "top_k, top_n_sigma, top_p, typical_p, xtc"),
]


@pytest.mark.parametrize("path", ["/completion", "/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field, value, message", BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_options_are_400(server, path, field, value, message):
    body = {"n_predict": 1, field: value}
    body.update({"messages": [{"role": "user", "content": "Hi"}]} if "chat" in path else {"prompt": "Hi"})
    r = server.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err == {"code": 400, "message": message, "type": "invalid_request_error"}
    assert server.get("/health").json()["slots_idle"] == 1
