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
