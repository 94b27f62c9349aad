"""The shared system prompt: -spf and the runtime system_prompt object."""
from __future__ import annotations

import json

import pytest

SYSTEM = {"prompt": "Transcript of a dialog, where the User interacts with an Assistant.\n",
          "anti_prompt": "User:", "assistant_name": "Assistant:"}
PROMPT = "User: What is the capital of France?\nAssistant:"


@pytest.fixture(scope="module")
def plain(server_factory):
    return server_factory("-c", "2048", "-np", "2")


@pytest.fixture(scope="module")
def with_file(server_factory, tmp_path_factory):
    path = tmp_path_factory.mktemp("spf") / "system.json"
    path.write_text(json.dumps({"system_prompt": SYSTEM}))
    return server_factory("-c", "2048", "-np", "2", "-spf", str(path))


def tokens(server, text: str) -> list[int]:
    return server.post("/tokenize", json={"content": text}).json()["tokens"]


def test_props_report_names(with_file):
    props = with_file.get("/props").json()
    assert props["user_name"] == "User:" and props["assistant_name"] == "Assistant:"


def by_hand(plain) -> str:
    """The system prompt decoded first, then the user's prompt on top of it (cache_prompt), in
    one slot of a server without a system prompt: the same two decode steps, so the same numbers."""
    sp = tokens(plain, SYSTEM["prompt"])
    plain.post("/completion", json={"prompt": sp, "n_predict": 0, "cache_prompt": True, "id_slot": 0})
    return plain.post("/completion", json={"prompt": sp + tokens(plain, PROMPT), "n_predict": 16, "repeat_penalty": 1.0,
                                           "temperature": 0, "cache_prompt": True, "id_slot": 0}).json()["content"]


def test_output_equals_prefixing_by_hand(plain, with_file):
    expected = by_hand(plain)
    for slot in (0, 1):  # slot 1 holds a copy of slot 0's system prompt KV
        res = with_file.post("/completion", json={"prompt": PROMPT, "n_predict": 16, "temperature": 0, "repeat_penalty": 1.0,
                                                  "id_slot": slot}).json()
        assert res["content"] == expected, slot
        # only the user's part was evaluated: the system prompt came from the KV copy
        assert res["timings"]["prompt_n"] == len(tokens(plain, PROMPT))


def test_runtime_system_prompt(server_factory, plain):
    srv = server_factory("-c", "2048", "-np", "2")
    res = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 16, "temperature": 0, "repeat_penalty": 1.0,
                                        "system_prompt": SYSTEM}).json()
    assert res["content"] == by_hand(plain)
    assert srv.get("/props").json()["assistant_name"] == "Assistant:"
    bad = srv.post("/completion", json={"prompt": "x", "system_prompt": {"prompt": 5}})
    assert bad.status_code == 400 and "system_prompt.prompt" in bad.json()["error"]["message"]
