"""Today's llama-server result options and fields, through the real server: ``n`` choices,
``return_tokens``, ``response_fields``, ``timings_per_token``, ``verbose``, ``return_progress``,
``cache_n``, ``stop_type``/``has_new_line`` and ``system_fingerprint``."""
from __future__ import annotations

import openai
import pytest

from helpers import WHOLE_PROMPT, sse_events

PROMPT = "The capital of France is"
MESSAGES = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", "2", "-b", "64")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-no-key-required", max_retries=0, timeout=120)


def complete(server, **body):
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_return_tokens_gives_the_generated_ids(server):
    res = complete(server, return_tokens=True)
    assert len(res["tokens"]) == 8 and all(isinstance(t, int) for t in res["tokens"])
    text = server.post("/detokenize", json={"tokens": res["tokens"]}).json()["content"]
    assert text == res["content"]
    assert complete(server)["tokens"] == []


def test_streamed_pieces_carry_their_tokens_only_when_asked(server):
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0, "stream": True,
                                         "return_tokens": True}, stream=True)
    events = sse_events(r)
    ids = [t for ev in events[:-1] for t in ev["tokens"]]
    assert ids == complete(server, return_tokens=True)["tokens"]
    plain = sse_events(server.post("/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0,
                                                        "stream": True}, stream=True))
    assert all("tokens" not in ev for ev in plain[:-1])   # the spec's shape: content and stop


def test_final_result_has_stop_type_and_has_new_line(server):
    res = complete(server)
    assert res["stop_type"] == "limit" and res["has_new_line"] == ("\n" in res["content"])
    res = complete(server, stop=[" Paris"], n_predict=32)
    assert res["stop_type"] == "word" and res["stopping_word"] == " Paris"


def test_response_fields_picks_fields_and_nested_ones(server):
    res = complete(server, response_fields=["content", "generation_settings/n_predict", "no_such_field"])
    assert set(res) == {"content", "generation_settings/n_predict"}
    assert res["generation_settings/n_predict"] == 8
    r = server.post("/completion", json={"prompt": PROMPT, "response_fields": [1]})
    assert r.status_code == 400 and "response_fields" in r.json()["error"]["message"]


def test_cache_n_counts_the_reused_prompt(server):
    prompt = "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve,"
    first = complete(server, prompt=prompt, cache_prompt=True, id_slot=1)
    again = complete(server, prompt=prompt, cache_prompt=True, id_slot=1)
    n_prompt = first["tokens_evaluated"]
    assert first["timings"]["cache_n"] == 0 and first["timings"]["prompt_n"] == n_prompt
    assert again["timings"]["cache_n"] == n_prompt - 1 and again["timings"]["prompt_n"] == 1


def test_timings_per_token_in_every_streamed_piece(server):
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 6, "temperature": 0, "stream": True,
                                         "timings_per_token": True}, stream=True)
    events = sse_events(r)
    counts = [ev["timings"]["predicted_n"] for ev in events[:-1]]
    assert counts == sorted(counts) and counts[-1] <= 6 and all("prompt_per_second" in ev["timings"]
                                                                 for ev in events)


def test_return_progress_reports_each_prompt_batch(server):
    prompt = "This is a test " * 35          # 141 tokens: three batches of 64
    events = sse_events(server.post("/completion", json={"prompt": prompt, "n_predict": 2, "stream": True,
                                                         "return_progress": True, "id_slot": 0},
                                    stream=True))
    n_prompt = events[-1]["tokens_evaluated"]
    assert 128 < n_prompt <= 192
    progress = [ev["prompt_progress"] for ev in events if "prompt_progress" in ev]
    assert progress[0]["cache"] == progress[0]["processed"] == 0
    assert [p["processed"] for p in progress[1:]] == [64, 128, n_prompt]
    assert all(p["total"] == n_prompt and p["cache"] == 0 for p in progress)
    # again, with the prompt cached: one report of what the cache held, one for the last token
    events = sse_events(server.post("/completion", json={"prompt": prompt, "n_predict": 2, "stream": True,
                                                         "return_progress": True, "id_slot": 0,
                                                         "cache_prompt": True}, stream=True))
    progress = [ev["prompt_progress"] for ev in events if "prompt_progress" in ev]
    assert [(p["cache"], p["processed"]) for p in progress] == [(n_prompt - 1, n_prompt - 1),
                                                                (n_prompt - 1, n_prompt)]


def test_chat_n_choices(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=8, n=3, seed=42, temperature=1.0,
                                       extra_body=WHOLE_PROMPT)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.message.role == "assistant" for c in r.choices)
    assert r.usage.completion_tokens == 24
    # choice i runs with seed + i: the same request gives the same choices
    again = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=8, n=3, seed=42,
                                           temperature=1.0, extra_body=WHOLE_PROMPT)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    assert r.system_fingerprint.startswith("b")


def test_chat_n_choices_pinned_to_one_slot(server):
    """Every choice wants slot 0: they run one after another, and the next request still runs."""
    for _ in range(2):
        r = server.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, "n": 2, "id_slot": 0})
        assert r.status_code == 200, r.text
        assert [c["index"] for c in r.json()["choices"]] == [0, 1]


def test_chat_n_choices_stream(client):
    stream = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=6, n=2, stream=True,
                                            stream_options={"include_usage": True})
    text = {0: "", 1: ""}
    finish = {}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert finish == {0: "length", 1: "length"} and all(text.values())
    assert usage.completion_tokens == 12


def test_completions_n_choices(client):
    r = client.completions.create(model="x", prompt=PROMPT, max_tokens=4, n=2, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text      # greedy: the same text twice


@pytest.mark.parametrize("n", [0, 17, "2"])
def test_bad_n_is_400(server, n):
    r = server.post("/v1/chat/completions", json={"messages": MESSAGES, "n": n})
    assert r.status_code == 400 and "'n'" in r.json()["error"]["message"]


def test_verbose_adds_the_native_result(server):
    body = {"messages": MESSAGES, "max_tokens": 2}
    res = server.post("/v1/chat/completions", json={**body, "verbose": True}).json()
    assert "Book" in res["__verbose"]["prompt"] and res["__verbose"]["tokens_predicted"] == 2
    assert "__verbose" not in server.post("/v1/chat/completions", json=body).json()


def test_chat_stream_first_chunk_and_timings(server):
    events = sse_events(server.post("/v1/chat/completions", json={
        "messages": MESSAGES, "max_tokens": 4, "stream": True, "timings_per_token": True,
        "stream_options": {"include_usage": True}}, stream=True))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "timings" not in events[0]
    assert events[-1]["choices"] == [] and events[-1]["timings"]["predicted_n"] == 4
    assert all(ev["system_fingerprint"].startswith("b") for ev in events)


def test_chat_return_progress(server):
    events = sse_events(server.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "This is a test " * 30}], "max_tokens": 2, "stream": True,
        "return_progress": True}, stream=True))
    progress = [ev["prompt_progress"] for ev in events if "prompt_progress" in ev]
    assert len(progress) >= 3 and progress[-1]["processed"] == progress[-1]["total"]


def test_chat_input_tokens(server):
    n = server.post("/v1/chat/completions/input_tokens", json={"messages": MESSAGES}).json()["input_tokens"]
    res = server.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1}).json()
    assert n == res["usage"]["prompt_tokens"]


def test_several_prompts_give_one_result_each(server):
    tokens = server.post("/tokenize", json={"content": PROMPT, "add_special": True}).json()["tokens"]
    prompts = [tokens, PROMPT, {"prompt_string": PROMPT}, [PROMPT]]
    r = server.post("/completion", json={"prompt": prompts, "n_predict": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    results = r.json()
    assert [res["index"] for res in results] == [0, 1, 2, 3]
    assert len({res["content"] for res in results}) == 1 and results[0]["content"]
    events = sse_events(server.post("/completion", json={"prompt": prompts[:2], "n_predict": 6, "temperature": 0,
                                                         "stream": True}, stream=True))
    text = {0: "", 1: ""}
    for ev in events:
        text[ev["index"]] += ev["content"]
    assert text == {0: results[0]["content"], 1: results[0]["content"]}
    assert sorted(ev["index"] for ev in events if ev["stop"]) == [0, 1]


@pytest.mark.parametrize("prompt, needle", [
    ([{"text": "x"}], "prompt_string"),
    ([[1]] * 65, "at most 64"),
    ({"prompt_string": "x", "multimodal_data": ["AAAA"]}, "multimodal"),
])
def test_bad_prompt_forms_are_400(server, prompt, needle):
    r = server.post("/completion", json={"prompt": prompt, "n_predict": 1})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
