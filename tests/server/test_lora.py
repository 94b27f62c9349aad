"""--lora applies a LoRA adapter (a random one written by tools/make_test_gguf.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ServerProcess
from llamacy.models import default_model_path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
BODY = {"prompt": "The capital of France is", "n_predict": 12, "temperature": 0}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lora") / "adapter.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--lora-for", default_model_path()],
                   check=True)
    return str(out)


def test_adapter_changes_the_output(server_factory, adapter):
    base = server_factory("-c", "512").post("/completion", json=BODY).json()["content"]
    with_lora = server_factory("-c", "512", "--lora", adapter).post("/completion", json=BODY).json()["content"]
    assert "Paris" in base
    assert with_lora != base


def test_missing_adapter_stops_the_server_with_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.gguf")
    srv = ServerProcess("-c", "256", "--lora", missing, wait=False)
    try:
        assert srv.proc.wait(60) == 1
        assert missing in srv.log()
    finally:
        srv.stop()


def test_engine_adapter_is_applied_to_new_contexts(adapter):
    from llamacy.engine.context import Batch, Context
    from llamacy.engine.model import Model

    def first_logits(model):
        ctx = Context(model, n_ctx=256, n_threads=1)
        b = Batch(64, 1)
        b.add_sequence(model.vocab.tokenize("Hello world"), 0, 0, True)
        ctx.decode(b)
        return ctx.logits(-1).copy()

    plain = first_logits(Model(default_model_path()))
    m = Model(default_model_path())
    m.load_lora(adapter, 1.0)
    assert len(m.loras) == 1
    assert abs(first_logits(m) - plain).max() > 0.1
