"""A request is parsed and checked in full before it changes anything, and every input has a bound."""
from __future__ import annotations

import pytest

from helpers import ServerProcess


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "512", "-np", "1", "-t", "1", "--max-n-probs", "5", "--max-stop-strings", "3",
                          "--max-stop-length", "10", "--max-grammar-size", "2000", "--max-schema-depth", "8")


PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"


def complete(server, **body):
    return server.post("/completion", json={"prompt": PROMPT, "n_predict": 2, "temperature": 0, **body})


def error(r, status: int) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status
    return err["message"]


def test_an_invalid_request_does_not_replace_the_system_prompt(server):
    first = complete(server, cache_prompt=True)
    assert first.status_code == 200, first.text
    bad = complete(server, system_prompt={"prompt": "You are a pirate.", "assistant_name": "Captain"},
                   temperature="hot")
    assert "temperature" in error(bad, 400)
    assert server.get("/props").json()["assistant_name"] == ""
    again = complete(server, cache_prompt=True)
    assert again.status_code == 200, again.text
    # the slot kept its cache: only the last prompt token is evaluated again (a new system
    # prompt would have cleared every slot and put itself in front of the prompt)
    assert again.json()["timings"]["prompt_n"] == 1
    assert again.json()["tokens_evaluated"] == first.json()["tokens_evaluated"]


def test_a_system_prompt_with_a_bad_field_of_its_own_changes_nothing(server):
    bad = complete(server, system_prompt={"prompt": "You are a pirate.", "assistant_name": 7})
    assert "system_prompt.assistant_name" in error(bad, 400)
    assert server.get("/props").json()["assistant_name"] == ""


def test_a_valid_system_prompt_is_applied_with_its_request(server_factory):
    srv = server_factory("-c", "512", "-np", "1", "-t", "1")
    r = complete(srv, system_prompt={"prompt": "You are a pirate.", "assistant_name": "Captain"})
    assert r.status_code == 200, r.text
    assert srv.get("/props").json()["assistant_name"] == "Captain"


def nested_arrays(n: int) -> dict:
    """A schema of ``n`` arrays around an integer: ``n + 1`` objects deep."""
    schema: dict = {"type": "integer"}
    for _ in range(n):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("body, status, words", [
    ({"n_probs": 6}, 400, ["n_probs", "--max-n-probs", "5"]),
    ({"stop": ["a", "b", "c", "d"]}, 400, ["stop", "--max-stop-strings", "3"]),
    ({"stop": ["x" * 11]}, 400, ["stop", "--max-stop-length", "10"]),
    ({"grammar": "root ::= " + '"a" ' * 600}, 400, ["grammar", "--max-grammar-size", "2000"]),
    ({"grammar": "root ::= " + "(" * 300 + '"a"' + ")" * 300}, 400, ["grammar", "nests", "256"]),
    ({"json_schema": nested_arrays(8)}, 400, ["json_schema", "nested more than 8 levels", "--max-schema-depth"]),
])
def test_limits_answer_400_naming_the_limit(server, body, status, words):
    message = error(complete(server, **body), status)
    for w in words:
        assert w in message


def test_limits_at_the_bound_are_accepted(server):
    r = complete(server, n_probs=5, stop=["a", "b", "x" * 10], json_schema=nested_arrays(7))
    assert r.status_code == 200, r.text


def test_deep_schema_with_default_limits(server_factory):
    srv = server_factory("-c", "512", "-np", "1", "-t", "1")
    message = error(complete(srv, json_schema=nested_arrays(300)), 400)
    assert "nested more than 64 levels" in message
    # a chain of $refs recurses in the converter without nesting the JSON: still a 400
    defs = {f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}} for i in range(2000)}
    defs["d2000"] = {"type": "integer"}
    message = error(complete(srv, json_schema={"$defs": defs, "$ref": "#/$defs/d0"}), 400)
    assert "too deeply nested" in message
    # a grammar nested 100k parentheses deep used to overflow libllama's parser (the process died)
    message = error(complete(srv, grammar="root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000), 400)
    assert "nests parentheses" in message
    assert complete(srv).status_code == 200


def test_oversized_body_is_413_before_it_is_read(server_factory):
    srv = server_factory("-c", "512", "-np", "1", "-t", "1", "--max-body-size", "1000")
    r = srv.post("/completion", data=b'{"prompt": "' + b"a" * 2000 + b'"}',
                 headers={"Content-Type": "application/json"})
    message = error(r, 413)
    assert "--max-body-size" in message and "2014 bytes" in message
    assert complete(srv).status_code == 200
