"""Continuing the last message (today's llama-server): a trailing assistant message is a prefill
that the answer continues, ``continue_final_message`` says so explicitly (vLLM's name),
``add_generation_prompt`` can be turned off, and the template gets today's context
(``enable_thinking`` both ways, ``date_string``/``datetime``) — through the real server."""
from __future__ import annotations

import datetime

import pytest

USER = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]
HEAD = "<|im_start|>system\nBook<|im_end|>\n<|im_start|>user\nWhat is the best book<|im_end|>\n"
# DeepSeek R1's way of turning thinking off: an undefined enable_thinking counts as false
THINK_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|><think>\n"
                  "{% if not enable_thinking %}</think>{% endif %}{% endif %}")
DATE_TEMPLATE = ("Today: {{ date_string }} / {{ datetime }}\n"
                 "{% for m in messages %}{{ m.content }}{% endfor %}")
# Firefunction v2's way of listing tools: an undefined variable added to a string
UNDEFINED_TEMPLATE = ("{% set s = 'Functions:' + functions %}{{ s }}|"
                      "{% for m in messages %}{{ m.content }}{% endfor %}")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "512", "-np", "2")


def prompt_of(server, **body) -> str:
    r = server.post("/apply-template", json=body)
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


def chat(server, **body):
    return server.post("/v1/chat/completions", json={"max_tokens": 4, "temperature": 0, **body})


def test_a_trailing_assistant_message_is_continued(server):
    prompt = prompt_of(server, messages=[*USER, {"role": "assistant", "content": "Whill"}])
    assert prompt == HEAD + "<|im_start|>assistant\nWhill"
    parts = [{"type": "text", "text": "Wh"}, {"type": "text", "text": "ill"}]
    assert prompt_of(server, messages=[*USER, {"role": "assistant", "content": parts}]) == \
        HEAD + "<|im_start|>assistant\nWh\n\nill"
    # the answer is the continuation: what /completion gives for the same text
    r = chat(server, messages=[*USER, {"role": "assistant", "content": "The best book is"}])
    assert r.status_code == 200, r.text
    raw = server.post("/completion", json={"prompt": HEAD + "<|im_start|>assistant\nThe best book is",
                                           "n_predict": 4, "temperature": 0}).json()
    assert r.json()["choices"][0]["message"]["content"] == raw["content"]
    assert r.json()["usage"]["prompt_tokens"] == raw["tokens_evaluated"]


def test_continue_final_message_is_the_explicit_form(server):
    messages = [*USER, {"role": "assistant", "content": "Whill"}]
    assert prompt_of(server, messages=messages, add_generation_prompt=False, continue_final_message=True) == \
        prompt_of(server, messages=messages)
    assert prompt_of(server, messages=messages, add_generation_prompt=False, continue_final_message="content") == \
        HEAD + "<|im_start|>assistant\nWhill"


def test_add_generation_prompt_false_ends_after_the_last_turn(server):
    assert prompt_of(server, messages=USER, add_generation_prompt=False) == HEAD
    assert prompt_of(server, messages=USER) == HEAD + "<|im_start|>assistant\n"


@pytest.mark.parametrize("body, message", [
    ({"messages": [*USER, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "Cannot have 2 or more assistant messages at the end of the list."),
    ({"messages": [*USER, {"role": "assistant", "content": "a"}], "continue_final_message": True},
     "Cannot set both add_generation_prompt and continue_final_message to true."),
    ({"messages": USER, "continue_final_message": True, "add_generation_prompt": False},
     "'continue_final_message' continues the last message, which must be the assistant's"),
    ({"messages": [*USER, {"role": "assistant", "content": "a"}], "continue_final_message": "all",
      "add_generation_prompt": False},
     "'continue_final_message' must be a boolean, \"content\" or \"reasoning_content\""),
    ({"messages": [*USER, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "Cannot continue an assistant message that contains tool calls."),
])
def test_bad_continuations_are_400(server, body, message):
    for path in ("/v1/chat/completions", "/apply-template"):
        r = server.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}
    assert server.get("/health").json()["slots_idle"] == 2


def test_no_prefill_assistant_renders_the_trailing_turn_whole(server_factory):
    srv = server_factory("-c", "256", "--no-prefill-assistant")
    assert prompt_of(srv, messages=[*USER, {"role": "assistant", "content": "Whill"}]) == \
        HEAD + "<|im_start|>assistant\nWhill<|im_end|>\n<|im_start|>assistant\n"


def test_templates_see_enable_thinking_both_ways(server_factory):
    on = server_factory("-c", "256", "--chat-template", THINK_TEMPLATE)
    assert prompt_of(on, messages=[{"role": "user", "content": "hi"}]).endswith("<|assistant|><think>\n")
    off = prompt_of(on, messages=[{"role": "user", "content": "hi"}],
                    chat_template_kwargs={"enable_thinking": False})
    assert off.endswith("<think>\n</think>")
    budget0 = server_factory("-c", "256", "--chat-template", THINK_TEMPLATE, "--reasoning-budget", "0")
    assert prompt_of(budget0, messages=[{"role": "user", "content": "hi"}]).endswith("<think>\n</think>")


def test_a_prefill_after_an_open_thinking_block_closes_it(server_factory):
    srv = server_factory("-c", "256", "--chat-template", THINK_TEMPLATE)
    prompt = prompt_of(srv, messages=[{"role": "user", "content": "hi"},
                                      {"role": "assistant", "content": "Sure", "reasoning_content": "easy"}])
    assert prompt == "<|user|>hi<|assistant|><think>\neasy</think>Sure"
    thinking = prompt_of(srv, messages=[{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "", "reasoning_content": "Let me"}])
    assert thinking == "<|user|>hi<|assistant|><think>\nLet me"


def test_templates_get_todays_date(server_factory):
    srv = server_factory("-c", "256", "--chat-template", DATE_TEMPLATE)
    before = datetime.datetime.now()
    prompt = prompt_of(srv, messages=[{"role": "user", "content": "hi"}])
    after = datetime.datetime.now()
    assert prompt in {f"Today: {d.strftime('%d %b %Y')} / {d.strftime('%b %d %Y')}\nhi" for d in (before, after)}


def test_an_undefined_variable_joined_to_a_string_is_empty_text(server_factory):
    srv = server_factory("-c", "256", "--chat-template", UNDEFINED_TEMPLATE)
    assert prompt_of(srv, messages=[{"role": "user", "content": "hi"}]) == "Functions:|hi"
    other = server_factory("-c", "256", "--chat-template", "{{ functions + 1 }}{{ messages[0].content }}")
    r = other.post("/apply-template", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "chat template failed: 'functions' is undefined"
