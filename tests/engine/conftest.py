"""Fixtures for the engine tests: the real default model (SmolLM2-135M) loaded once per session."""
from __future__ import annotations

import os

import pytest

from llamacy.engine.context import Context
from llamacy.engine.model import Model
from llamacy.models import default_model_path

# One thread by default: ggml's worker threads spin at every barrier, so on a small shared
# machine (2 cores, other jobs running) two threads can be 10-20x slower than one.
N_THREADS = int(os.environ.get("LLAMACY_TEST_THREADS", "1"))


@pytest.fixture(scope="session")
def model_path() -> str:
    return default_model_path()


@pytest.fixture(scope="session")
def model(model_path: str) -> Model:
    m = Model(model_path)
    yield m
    m.close()


@pytest.fixture(scope="session")
def vocab(model: Model):
    return model.vocab


@pytest.fixture(scope="module")
def shared_ctx(model: Model) -> Context:
    c = Context(model, n_ctx=2048, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
    yield c
    c.close()


@pytest.fixture
def ctx(shared_ctx: Context) -> Context:
    """The module's context with its KV memory emptied: each test starts clean."""
    shared_ctx.memory_clear()
    return shared_ctx
