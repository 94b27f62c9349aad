"""/infill: FIM prompts on a tiny model with FIM tokens; a clear 400 on a model without them."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
PRE, SUF, MID = 3, 4, 5   # three special tokens of the SmolLM2 vocab, declared as FIM tokens


@pytest.fixture(scope="module")
def fim_model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("fim") / "fim.gguf"
    from llamacy.models import default_model_path
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--source", default_model_path(),
                    "--fim", f"{PRE},{SUF},{MID}"], check=True)
    return str(out)


def logged_prompt(server) -> list[int]:
    found = re.findall(r"prompt tokens: \[([0-9, ]*)\]", server.log())
    return [int(x) for x in found[-1].split(",")]


def test_infill_prompt_layout(server_factory, fim_model):
    srv = server_factory("-m", fim_model, "-c", "512", "-v")
    body = {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n\nprint(add(1, 2))", "n_predict": 4}
    r = srv.post("/infill", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["tokens_predicted"] == 4
    prefix = srv.post("/tokenize", json={"content": body["input_prefix"]}).json()["tokens"]
    suffix = srv.post("/tokenize", json={"content": body["input_suffix"]}).json()["tokens"]
    assert logged_prompt(srv) == [PRE, *prefix, SUF, *suffix, MID]
    assert res["tokens_evaluated"] == len(prefix) + len(suffix) + 3
    streamed = srv.post("/infill", json={**body, "stream": True}, stream=True)
    assert b'"stop":true' in streamed.content


def test_spm_infill_order(server_factory, fim_model):
    srv = server_factory("-m", fim_model, "-c", "512", "-v", "--spm-infill")
    r = srv.post("/infill", json={"input_prefix": "x = ", "input_suffix": " + 1", "n_predict": 2})
    assert r.status_code == 200, r.text
    prefix = srv.post("/tokenize", json={"content": "x = "}).json()["tokens"]
    suffix = srv.post("/tokenize", json={"content": " + 1"}).json()["tokens"]
    assert logged_prompt(srv) == [SUF, *suffix, PRE, *prefix, MID]


def test_infill_without_fim_tokens_is_400(server_factory):
    srv = server_factory("-c", "1024")
    r = srv.post("/infill", json={"input_prefix": "def f(", "input_suffix": "    return x\n"})
    assert r.status_code == 400
    assert "FIM" in r.json()["error"]["message"]
    r = srv.post("/infill", json={"input_prefix": 5})
    assert r.status_code == 400 and "input_prefix" in r.json()["error"]["message"]
    assert srv.get("/health").json()["slots_idle"] == 1


@pytest.mark.parametrize("input_extra,message", [
    ({}, "input_extra[0] must contain a 'text' field with a string value"),
    ({"filename": "ok"}, "input_extra[0] must contain a 'text' field with a string value"),
    ({"filename": 123}, "input_extra[0] must contain a 'text' field with a string value"),
    ({"filename": 123, "text": "abc"}, "input_extra[0].filename must be a string"),
    ({"filename": 123, "text": 456}, "input_extra[0] must contain a 'text' field with a string value"),
    ("text", "input_extra[0] must contain a 'text' field with a string value"),
])
def test_invalid_input_extra_is_400(server_factory, fim_model, input_extra, message):
    srv = server_factory("-m", fim_model, "-c", "512")
    r = srv.post("/infill", json={"input_extra": [input_extra], "input_prefix": "x = ", "input_suffix": "\n"})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}
    r = srv.post("/infill", json={"input_extra": {"text": "a"}, "input_prefix": "x = ", "input_suffix": "\n"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "'input_extra' must be an array of {\"filename\": string, \"text\": string}"
    assert srv.get("/health").json()["slots_idle"] == 1


def test_input_extra_goes_before_the_fim_prefix(server_factory, fim_model):
    srv = server_factory("-m", fim_model, "-c", "512", "-v")
    body = {"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 2,
            "input_extra": [{"filename": "a.py", "text": "A = 1"}, {"text": "B = 2"}]}
    r = srv.post("/infill", json=body)
    assert r.status_code == 200, r.text

    def tok(text):
        return srv.post("/tokenize", json={"content": text}).json()["tokens"]
    # libllama finds SmolLM2's "<reponame>" (id 4) as the FIM repository token by its text; its
    # "<file_sep>" is this model's FIM middle token (5), so chunks get the plain-text separator
    snippet = tok("\n\n--- snippet ---\n\n")
    layout = [4, *tok("myproject\n"), *snippet, *tok("A = 1"), *snippet, *tok("B = 2"),
              PRE, *tok("x = "), SUF, *tok("\n"), MID]
    assert logged_prompt(srv) == layout
    assert r.json()["tokens_evaluated"] == len(layout)


def test_input_extra_with_repository_level_fim_tokens(server_factory, tmp_path):
    from llamacy.models import default_model_path
    model = tmp_path / "fim5.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(model), "--source", default_model_path(),
                    "--fim", f"{PRE},{SUF},{MID},6,7"], check=True)
    srv = server_factory("-m", str(model), "-c", "512", "-v")
    r = srv.post("/infill", json={"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 2,
                                  "input_extra": [{"filename": "a.py", "text": "A = 1"}]})
    assert r.status_code == 200, r.text

    def tok(text):
        return srv.post("/tokenize", json={"content": text}).json()["tokens"]
    assert logged_prompt(srv) == [6, *tok("myproject\n"), 7, *tok("a.py\n"), *tok("A = 1"), 7, *tok("filename\n"),
                                  PRE, *tok("x = "), SUF, *tok("\n"), MID]
