"""Reasoning through the real server: a template that opens a <think> block, thoughts returned in
``reasoning_content`` (streamed as ``delta.reasoning_content``), ``--reasoning-format`` and the
per-request ``reasoning_format``, ``--reasoning-budget 0`` and ``chat_template_kwargs``."""
from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest
import requests

from chat_fixtures import THINK_TEMPLATE

ASK = [{"role": "user", "content": "Is water wet?"}]
# A grammar makes the 135M model think, close the block and answer, token by token.
THOUGHT = "The user asks about water. Water makes things wet."
ANSWER = "Yes, water is wet."
GRAMMAR = "root ::= " + json.dumps(THOUGHT + "</think>\n\n" + ANSWER)


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "--chat-template", THINK_TEMPLATE)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def stream(client, **kw):
    reasoning, content = [], []
    for chunk in client.chat.completions.create(model="x", stream=True, messages=ASK, **kw):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            content.append(delta.content or "")
    return reasoning, content


def test_prompt_opens_the_think_block(server):
    prompt = server.post("/apply-template", json={"messages": ASK}).json()["prompt"]
    assert prompt == "<|im_start|>user\nIs water wet?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def test_thoughts_go_to_reasoning_content(client):
    r = client.chat.completions.create(model="x", messages=ASK, temperature=0, max_tokens=100,
                                       extra_body={"grammar": GRAMMAR})
    msg = r.choices[0].message
    assert msg.reasoning_content == THOUGHT
    assert msg.content == ANSWER


def test_thoughts_stream_as_reasoning_deltas(client):
    reasoning, content = stream(client, temperature=0, max_tokens=100, extra_body={"grammar": GRAMMAR})
    assert "".join(reasoning) == THOUGHT and "".join(content) == ANSWER
    assert sum(1 for r in reasoning if r) > 3           # streamed in pieces, not at the end
    assert not any("<" in part for part in reasoning + content)
    first_answer = next(i for i, c in enumerate(content) if c)
    assert all(not r for r in reasoning[first_answer:])


def test_reasoning_format_none_per_request(client):
    r = client.chat.completions.create(model="x", messages=ASK, temperature=0, max_tokens=100,
                                       extra_body={"grammar": GRAMMAR, "reasoning_format": "none"})
    msg = r.choices[0].message
    assert getattr(msg, "reasoning_content", None) is None
    assert msg.content == THOUGHT + "</think>\n\n" + ANSWER


def test_unfinished_thinking_is_all_reasoning(client):
    r = client.chat.completions.create(model="x", messages=ASK, temperature=0, max_tokens=8)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "length"
    assert msg.reasoning_content and msg.content == ""
    plain = client.chat.completions.create(model="x", messages=ASK, temperature=0, max_tokens=8,
                                           extra_body={"reasoning_format": "none"})
    assert plain.choices[0].message.content == msg.reasoning_content


def test_enable_thinking_false_per_request(server):
    body = {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}}
    prompt = server.post("/apply-template", json=body).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt


@pytest.mark.parametrize("body, message", [
    ({"reasoning_format": "sometimes"}, "'reasoning_format' must be one of none, deepseek"),
    ({"chat_template_kwargs": [1]}, "'chat_template_kwargs' must be an object"),
    ({"chat_template_kwargs": {"enable_thinking": "no"}}, "enable_thinking' must be a boolean"),
])
def test_bad_reasoning_options_are_400(server, body, message):
    r = requests.post(server.url + "/v1/chat/completions", json={"messages": ASK, **body}, timeout=60)
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def test_server_flags_budget_zero_and_format_none(server_factory):
    srv = server_factory("-c", "1024", "--chat-template", THINK_TEMPLATE, "--reasoning-budget", "0",
                         "--reasoning-format", "none")
    prompt = srv.post("/apply-template", json={"messages": ASK}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt
    think = srv.post("/apply-template", json={"messages": ASK, "chat_template_kwargs": {"enable_thinking": True}})
    assert think.json()["prompt"].endswith("<think>\n")
    r = srv.post("/v1/chat/completions", json={"messages": ASK, "temperature": 0, "max_tokens": 100,
                                               "grammar": "root ::= " + json.dumps("<think>a</think>b")}).json()
    assert r["choices"][0]["message"]["content"] == "<think>a</think>b"
    assert "reasoning_content" not in r["choices"][0]["message"]


def test_reasoning_budget_other_values_are_refused():
    proc = subprocess.run([sys.executable, "-m", "llamacy", "--reasoning-budget", "100"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--reasoning-budget must be -1" in proc.stderr


def test_a_tool_call_may_follow_thoughts(server):
    """With tools, the block the template opens stays open (as today's llama-server): the model
    thinks first, and the tool-call grammar holds after the closing tag."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools}
    prompt = server.post("/apply-template", json=body).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    # the engine compiled the grammar with its thoughts rule; the 135M model thinks (a grammar
    # starting at the call would have made its first token "{" and left no reasoning at all)
    r = server.post("/v1/chat/completions", json={**body, "tool_choice": "required", "temperature": 0,
                                                  "max_tokens": 40})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["reasoning_content"]) > 20 and choice["message"]["content"] == ""
