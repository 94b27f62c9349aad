"""Per-sequence state: save to bytes / file, clear, restore, and continue identically."""
from __future__ import annotations

import os

import numpy as np
import pytest

from llamacy.engine.context import Batch
from llamacy.engine.sampling import Sampler
from llamacy.errors import LlamacyError

from .helpers import PROMPT, continue_one, greedy

N_CONT = 10


@pytest.fixture
def prefilled(ctx, model, vocab):
    """Seq 0 holds the prompt; returns (prompt, first generated token, reference continuation)."""
    prompt = vocab.tokenize(PROMPT)
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    first = Sampler(model, greedy()).sample(ctx, i)
    return prompt, first


def _reference(ctx, model, prompt, first, seq_id=0):
    return continue_one(ctx, Sampler(model, greedy()), first, len(prompt), N_CONT, seq_id)


def test_state_bytes_round_trip(ctx, model, prefilled):
    prompt, first = prefilled
    state = ctx.seq_get_state(0)
    assert isinstance(state, bytes)
    assert len(state) == ctx.seq_state_size(0) > 0
    ref = _reference(ctx, model, prompt, first)

    ctx.memory_clear()
    assert ctx.seq_pos_max(0) == -1
    assert ctx.seq_set_state(state, 0) == len(state)
    assert ctx.seq_pos_min(0) == 0 and ctx.seq_pos_max(0) == len(prompt) - 1
    assert _reference(ctx, model, prompt, first) == ref


def test_state_bytes_into_another_sequence(ctx, model, prefilled):
    prompt, first = prefilled
    state = ctx.seq_get_state(0)
    ref = _reference(ctx, model, prompt, first)
    ctx.memory_clear()
    ctx.seq_set_state(state, 2)
    assert ctx.seq_pos_max(0) == -1
    assert ctx.seq_pos_max(2) == len(prompt) - 1
    assert _reference(ctx, model, prompt, first, seq_id=2) == ref


def test_state_accepts_any_buffer(ctx, prefilled):
    state = ctx.seq_get_state(0)
    ctx.memory_clear()
    assert ctx.seq_set_state(bytearray(state), 1) == len(state)
    assert ctx.seq_pos_max(1) == len(prefilled[0]) - 1


def test_state_file_round_trip(ctx, model, prefilled, tmp_path):
    prompt, first = prefilled
    path = tmp_path / "seq0.bin"
    written = ctx.seq_save_file(path, 0, prompt)
    assert written > 0 and os.path.getsize(path) >= written
    ref = _reference(ctx, model, prompt, first)

    ctx.memory_clear()
    nbytes, tokens = ctx.seq_load_file(path, 1, len(prompt) + 16)
    assert nbytes > 0
    assert tokens == prompt
    assert ctx.seq_pos_max(1) == len(prompt) - 1
    assert _reference(ctx, model, prompt, first, seq_id=1) == ref


def test_state_file_str_path_and_exact_capacity(ctx, prefilled, tmp_path):
    prompt, _ = prefilled
    path = str(tmp_path / "seq0.bin")
    ctx.seq_save_file(path, 0, prompt)
    ctx.memory_clear()
    _, tokens = ctx.seq_load_file(path, 0, len(prompt))
    assert tokens == prompt


def test_state_file_capacity_too_small(ctx, prefilled, tmp_path):
    prompt, _ = prefilled
    path = tmp_path / "seq0.bin"
    ctx.seq_save_file(path, 0, prompt)
    with pytest.raises(LlamacyError):
        ctx.seq_load_file(path, 1, len(prompt) - 1)


def test_state_file_errors(ctx, prefilled, tmp_path):
    prompt, _ = prefilled
    with pytest.raises(LlamacyError):
        ctx.seq_load_file(tmp_path / "missing.bin", 1, 100)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(LlamacyError):
        ctx.seq_load_file(garbage, 1, 100)
    good = tmp_path / "good.bin"
    ctx.seq_save_file(good, 0, prompt)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(LlamacyError):
        ctx.seq_load_file(truncated, 1, 100)
    with pytest.raises(LlamacyError):
        ctx.seq_save_file(tmp_path / "no" / "such" / "dir.bin", 0, prompt)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_bad_state_bytes(ctx, prefilled, kind):
    state = ctx.seq_get_state(0)
    data = {"garbage": np.random.default_rng(2).bytes(len(state)), "truncated": state[: len(state) // 2], "empty": b""}[kind]
    with pytest.raises(LlamacyError):
        ctx.seq_set_state(data, 1)
    # seq 0 is untouched and still usable
    assert ctx.seq_pos_max(0) == len(prefilled[0]) - 1
