"""The OpenAI-compatible API through the official ``openai`` client."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from helpers import ANSWERED_QUESTION, WHOLE_PROMPT

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]
ANSWERED = [MESSAGES[0], {"role": "user", "content": ANSWERED_QUESTION}]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "4096", "-np", "2", "-a", "smollm-test")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-no-key-required", max_retries=0, timeout=120)


def test_chat_completion(client):
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=ANSWERED, max_tokens=24, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.object == "chat.completion" and r.model == "gpt-3.5-turbo"


def test_chat_uses_the_model_template(server, client):
    # the same conversation rendered by hand with SmolLM2's ChatML template, sent to /completion
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              f"<|im_start|>user\n{ANSWERED_QUESTION}<|im_end|>\n"
              "<|im_start|>assistant\n")
    raw = server.post("/completion", json={"prompt": prompt, "n_predict": 16, "temperature": 0}).json()["content"]
    r = client.chat.completions.create(model="x", messages=ANSWERED, max_tokens=16, temperature=0,
                                       extra_body=WHOLE_PROMPT)
    assert r.choices[0].message.content == raw


def test_chat_stream_equals_non_stream(client):
    full = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0,
                                          extra_body=WHOLE_PROMPT)
    chunks = list(client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body=WHOLE_PROMPT))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_stop_and_finish_reason(client):
    full = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0)
    word = full.choices[0].message.content.split()[1]
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=20, temperature=0, stop=[word])
    assert word not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_seed_and_sampling_options(client):
    kw = dict(model="x", messages=MESSAGES, max_tokens=16, temperature=1.0, top_p=0.9, seed=7,
              presence_penalty=0.5, frequency_penalty=0.5)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_logit_bias_bans_token(server, client):
    first = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=1, temperature=0)
    tok = server.post("/tokenize", json={"content": first.choices[0].message.content}).json()["tokens"][0]
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=1, temperature=0,
                                       logit_bias={str(tok): -100})
    assert r.choices[0].message.content != first.choices[0].message.content


def test_logprobs(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for item in content:
        assert len(item.top_logprobs) == 3 and item.logprob <= 0
        assert item.token == item.top_logprobs[0].token


def test_llama_cpp_extras_pass_through(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=8, temperature=0.8,
                                       extra_body={"mirostat": 2, "top_k": 5, "min_p": 0.1, "repeat_penalty": 1.2})
    assert r.usage.completion_tokens >= 1


def test_grammar_extra(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=8,
                                       extra_body={"grammar": 'root ::= "Paris" | "Lyon"'})
    assert r.choices[0].message.content in ("Paris", "Lyon")


SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                           "population": {"type": "integer", "minimum": 0}},
          "required": ["city", "population"], "additionalProperties": False}


def test_response_format_json_object(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=64, temperature=0,
                                       response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_response_format_json_object_with_schema(client):
    r = client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=64, temperature=0,
                                       response_format={"type": "json_object", "schema": SCHEMA})
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_response_format_json_schema(client):
    r = client.chat.completions.create(
        model="x", messages=MESSAGES, max_tokens=64, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}})
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_completions(client):
    r = client.completions.create(model="x", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in r.choices[0].text and r.object == "text_completion"
    stream = list(client.completions.create(model="x", prompt="The capital of France is", max_tokens=8,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in stream) == r.choices[0].text


def test_completions_logprobs(client):
    r = client.completions.create(model="x", prompt="The capital of France is", max_tokens=3, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.top_logprobs[0]) == 2


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm-test"]


def test_errors_surface_as_client_exceptions(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="x", messages=[], max_tokens=4)
    assert "messages" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=MESSAGES, max_tokens=4, extra_body={"grammar": "root ::= ("})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=[{"role": 5, "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=MESSAGES, n=17)   # 1 to 16 choices
    with pytest.raises(openai.APIStatusError) as err:
        client.embeddings.create(model="x", input="hello")  # without --embeddings: the spec's 501
    assert err.value.status_code == 501 and "--embeddings" in str(err.value)

def test_template_override(server_factory):
    srv = server_factory("-c", "1024", "--chat-template", "llama2")
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)
    r = c.chat.completions.create(model="x", messages=MESSAGES, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens > 0
    props = srv.get("/props").json()
    assert "[INST]" in props["chat_template"]
