"""POST /apply-template, /tokenize with_pieces, and --chat-template with libllama's built-in names,
through the real server."""
from __future__ import annotations

import pytest

from llamacy.engine.model import chat_apply_template

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "512")


def test_apply_template_renders_the_model_template(server):
    r = server.post("/apply-template", json={"messages": MESSAGES})
    assert r.status_code == 200
    assert r.json() == {"prompt": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")}


def test_apply_template_prompt_is_what_chat_completions_runs(server):
    prompt = server.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    raw = server.post("/completion", json={"prompt": prompt, "n_predict": 8, "temperature": 0}).json()
    chat = server.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8, "temperature": 0}).json()
    assert chat["choices"][0]["message"]["content"] == raw["content"]
    assert chat["usage"]["prompt_tokens"] == raw["tokens_evaluated"]


@pytest.mark.parametrize("body, message", [
    ({}, "'messages' must be a non-empty array"),
    ({"messages": []}, "'messages' must be a non-empty array"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role must be a string"),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "x y"}}]}, "tool name"),
])
def test_apply_template_bad_input(server, body, message):
    r = server.post("/apply-template", json=body)
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def test_tokenize_with_pieces(server):
    r = server.post("/tokenize", json={"content": "Hello world", "with_pieces": True})
    assert r.status_code == 200
    tokens = r.json()["tokens"]
    plain = server.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert [t["id"] for t in tokens] == plain
    assert "".join(t["piece"] for t in tokens) == "Hello world"


def test_tokenize_with_pieces_gives_bytes_for_partial_characters(server):
    text = "😀 é 日本"
    tokens = server.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    raw = b"".join(bytes(t["piece"]) if isinstance(t["piece"], list) else t["piece"].encode() for t in tokens)
    assert raw.decode() == text
    assert any(isinstance(t["piece"], list) for t in tokens)        # the emoji is split across tokens
    for t in tokens:
        if isinstance(t["piece"], list):
            assert all(isinstance(b, int) and 0 <= b < 256 for b in t["piece"])


def test_tokenize_with_pieces_special_tokens(server):
    tokens = server.post("/tokenize", json={"content": "<|im_start|>user", "with_pieces": True}).json()["tokens"]
    assert tokens[0]["piece"] == "<|im_start|>"


def test_tokenize_with_pieces_must_be_boolean(server):
    r = server.post("/tokenize", json={"content": "x", "with_pieces": "yes"})
    assert r.status_code == 400 and "'with_pieces' must be a boolean" in r.json()["error"]["message"]


@pytest.mark.parametrize("name", ["monarch", "orion", "chatglm4", "deepseek2", "llama2-sys-strip"])
def test_builtin_names_start_and_render_like_libllama(server_factory, name):
    srv = server_factory("-c", "256", "--chat-template", name)
    prompt = srv.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    assert prompt == chat_apply_template(name, [(m["role"], m["content"]) for m in MESSAGES], True)
    assert srv.get("/props").json()["chat_template"]
    srv.stop()


def test_unknown_template_name_fails_start_up(server_factory):
    with pytest.raises(RuntimeError, match="unknown chat template 'no-such-template'"):
        server_factory("-c", "256", "--chat-template", "no-such-template")
