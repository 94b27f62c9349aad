"""Decoding: greedy determinism, batched sequences, decode errors, top_probs, KV ops."""
from __future__ import annotations

import numpy as np
import pytest

from llamacy.engine.context import Batch, Context
from llamacy.engine.sampling import Sampler, sample_batch, top_probs
from llamacy.errors import DecodeError, LlamacyError

from .helpers import PROMPT, generate, greedy

N_GEN = 16


def test_greedy_is_deterministic(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    a = generate(ctx, [Sampler(model, greedy())], [prompt], N_GEN)[0]
    ctx.memory_clear()
    b = generate(ctx, [Sampler(model, greedy())], [prompt], N_GEN)[0]
    assert a == b
    assert len(a) == N_GEN
    assert "Paris" in vocab.detokenize(a)


def test_one_sequence_equals_four_in_one_batch(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    alone = generate(ctx, [Sampler(model, greedy())], [prompt], N_GEN)[0]
    ctx.memory_clear()
    four = generate(ctx, [Sampler(model, greedy()) for _ in range(4)], [prompt] * 4, N_GEN, seq_ids=[0, 1, 2, 3])
    for seq in four:
        assert seq == alone
    for s in range(4):
        assert ctx.seq_pos_min(s) == 0
        assert ctx.seq_pos_max(s) == len(prompt) + N_GEN - 2


def test_different_prompts_in_one_batch_match_their_solo_runs(ctx, model, vocab):
    prompts = [vocab.tokenize(p) for p in (PROMPT, "def fibonacci(n):", "Once upon a time")]
    solo = []
    for p in prompts:
        ctx.memory_clear()
        solo.append(generate(ctx, [Sampler(model, greedy())], [p], 8)[0])
    ctx.memory_clear()
    together = generate(ctx, [Sampler(model, greedy()) for _ in prompts], prompts, 8)
    assert together == solo


def test_sample_equals_sample_batch(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    expected = int(np.argmax(ctx.logits(i)))
    # The fast path edits the logits row in place (penalties, bias); with neither it is a pure argmax.
    assert sample_batch(ctx, [Sampler(model, greedy())], [i]) == [expected]
    assert Sampler(model, greedy()).sample(ctx, i) == expected


def test_logits_view(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    assert batch.n_tokens == len(prompt) and batch.n_outputs == 1
    ctx.decode(batch)
    row = ctx.logits(i)
    assert row.shape == (model.n_vocab,) and row.dtype == np.float32
    assert np.isfinite(row).all()
    assert np.array_equal(ctx.logits(-1), row)
    with pytest.raises(LlamacyError):
        ctx.logits(0)  # no output requested for the first prompt token


def test_top_probs(ctx, vocab):
    prompt = vocab.tokenize(PROMPT)
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    logits = ctx.logits(i).astype(np.float64)
    probs = top_probs(ctx, i, 10)
    assert len(probs) == 10
    toks = [t for t, _ in probs]
    ps = [p for _, p in probs]
    assert ps == sorted(ps, reverse=True)
    assert all(0.0 < p <= 1.0 for p in ps)
    assert sum(ps) <= 1.0 + 1e-6
    softmax = np.exp(logits - logits.max())
    softmax /= softmax.sum()
    assert toks[0] == int(np.argmax(logits))
    assert ps[0] == pytest.approx(softmax.max(), rel=1e-4)
    assert set(toks) == set(np.argsort(-logits)[:10].tolist())
    for t, p in probs:
        assert p == pytest.approx(softmax[t], rel=1e-4, abs=1e-7)
    assert top_probs(ctx, i, 0) == []
    assert len(top_probs(ctx, i, 1)) == 1
    with pytest.raises(LlamacyError):
        top_probs(ctx, 0, 5)


# --- decode errors ------------------------------------------------------------------------

def _prefill(ctx, vocab, seq_id=0):
    prompt = vocab.tokenize(PROMPT)
    batch = Batch(len(prompt), 1)
    batch.add_sequence(prompt, 0, seq_id)
    ctx.decode(batch)
    return prompt


def _decode_one(ctx, token, pos, seq_id=0):
    batch = Batch(1, 1)
    batch.add(token, pos, seq_id, True)
    ctx.decode(batch)


@pytest.mark.parametrize("token", [-1, 10**6], ids=["negative", "too-large"])
def test_token_out_of_range(ctx, model, token):
    if token > 0:
        token = model.n_vocab + 5
    with pytest.raises(DecodeError) as info:
        _decode_one(ctx, token, 0)
    assert info.value.code == -1


@pytest.mark.parametrize("seq_id", [-1, 4, 1000])
def test_seq_id_out_of_range(ctx, vocab, seq_id):
    with pytest.raises(DecodeError):
        _decode_one(ctx, vocab.nl, 0, seq_id)


def test_position_gap_after_prompt(ctx, vocab):
    prompt = _prefill(ctx, vocab)
    with pytest.raises(DecodeError) as info:
        _decode_one(ctx, vocab.nl, len(prompt) + 10)
    assert info.value.code == -1


def test_position_going_back(ctx, vocab):
    _prefill(ctx, vocab)
    with pytest.raises(DecodeError):
        _decode_one(ctx, vocab.nl, 1)


def test_position_gap_inside_batch(ctx, vocab):
    batch = Batch(2, 1)
    batch.add(vocab.nl, 0, 0)
    batch.add(vocab.nl, 5, 0, True)
    with pytest.raises(DecodeError):
        ctx.decode(batch)


def test_negative_position(ctx, vocab):
    with pytest.raises(DecodeError):
        _decode_one(ctx, vocab.nl, -3)


def test_context_still_works_after_decode_errors(ctx, model, vocab):
    with pytest.raises(DecodeError):
        _decode_one(ctx, model.n_vocab, 0)
    prompt = _prefill(ctx, vocab)
    with pytest.raises(DecodeError):
        _decode_one(ctx, vocab.nl, len(prompt) + 3)
    _decode_one(ctx, vocab.nl, len(prompt))  # the right position still works
    assert ctx.seq_pos_max(0) == len(prompt)


def test_empty_batch_is_a_no_op(ctx):
    ctx.decode(Batch(4, 1))


def test_batch_overflow(vocab):
    batch = Batch(2, 1)
    batch.add(vocab.nl, 0, 0)
    batch.add(vocab.nl, 1, 0)
    with pytest.raises(OverflowError):
        batch.add(vocab.nl, 2, 0)
    with pytest.raises(OverflowError):
        Batch(2, 1).add_sequence([vocab.nl] * 3, 0, 0)
    batch.clear()
    assert batch.n_tokens == 0 and batch.n_outputs == 0
    with pytest.raises(ValueError):
        Batch(0, 1)


# --- KV memory ------------------------------------------------------------------------------

def test_seq_cp_then_continue_equals_original(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    ref = generate(ctx, [Sampler(model, greedy())], [prompt], 6)[0]
    ctx.memory_clear()
    _prefill(ctx, vocab, seq_id=0)
    ctx.seq_cp(0, 2)
    assert ctx.seq_pos_max(2) == len(prompt) - 1
    ctx.seq_rm(0, -1, -1)
    assert ctx.seq_pos_max(0) == -1
    # seq 2 holds the prompt: decoding its last token again (after removing it) gives the same logits.
    assert ctx.seq_rm(2, len(prompt) - 1, -1)
    batch = Batch(1, 1)
    i = batch.add(prompt[-1], len(prompt) - 1, 2, True)
    ctx.decode(batch)
    assert int(np.argmax(ctx.logits(i))) == ref[0]


def test_context_properties(model):
    c = Context(model, n_ctx=512, n_batch=256, n_ubatch=128, n_seq_max=2, n_threads=1)
    try:
        assert c.n_ctx == 512 and c.n_batch == 256 and c.n_ubatch == 128 and c.n_seq_max == 2
        assert c.can_shift
    finally:
        c.close()
        c.close()
    with pytest.raises(LlamacyError):
        c.n_ctx
    with pytest.raises(LlamacyError):
        c.decode(Batch(1, 1))
    with pytest.raises(LlamacyError):
        c.logits(0)
    with pytest.raises(ValueError):
        Context(model, type_k="q3_x")


def test_embeddings_mean_pooling(model, vocab):
    # n_seq_max 2: with mean pooling the pinned engine aborts unless n_ubatch % n_seq_max == 0
    c = Context(model, n_ctx=512, n_seq_max=2, n_threads=1, embeddings=True, pooling="mean")
    try:
        assert c.pooling == "mean"
        texts = ["hello world", "quantum chromodynamics and lattice gauge theory"]
        batch = Batch(64, 1)
        for s, t in enumerate(texts):
            batch.add_sequence(vocab.tokenize(t), 0, s)
        c.decode(batch)
        e0, e1 = c.embeddings_seq(0), c.embeddings_seq(1)
        assert e0.shape == e1.shape == (model.n_embd,)
        assert np.isfinite(e0).all() and np.linalg.norm(e0) > 0
        assert not np.allclose(e0, e1)
        # the same text alone gives the same pooled vector
        c.memory_clear()
        batch.clear()
        batch.add_sequence(vocab.tokenize(texts[0]), 0, 1)
        c.decode(batch)
        np.testing.assert_allclose(c.embeddings_seq(1), e0, rtol=1e-4, atol=1e-4)
    finally:
        c.close()
