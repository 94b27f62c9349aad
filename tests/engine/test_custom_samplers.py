"""The Cython samplers libllama lacks (tail-free, penalties with penalize_nl) vs numpy references."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llamacy.engine.context import Batch
from llamacy.engine.sampling import Sampler, apply_penalties, tail_free_reference_apply
from llamacy.engine.sampling_params import SamplingParams

from .helpers import REPETITIVE_PROMPT


# --- tail-free sampling ------------------------------------------------------------------------

def tail_free_numpy(logits: np.ndarray, z: float, min_keep: int) -> list[int]:
    """Tail-free sampling as llama.cpp had it, in float32 like the C code: sort, softmax, cut where
    the cumulative normalised |second derivative| of the probabilities first exceeds ``z``."""
    n = len(logits)
    if z >= 1.0 or n <= 2:
        return list(range(n))
    order = np.argsort(-logits, kind="stable")
    lg = logits[order].astype(np.float32)
    e = np.exp(lg - lg[0]).astype(np.float32)
    p = (e.astype(np.float64) / e.astype(np.float64).sum()).astype(np.float32)
    d1 = p[:-1] - p[1:]
    d2 = np.abs(d1[:-1] - d1[1:])
    total = np.add.accumulate(d2, dtype=np.float32)[-1]
    if total > 1e-6:
        d2 = (d2 / total).astype(np.float32)
    else:
        d2 = np.full(n - 2, np.float32(1.0 / (n - 2)), dtype=np.float32)
    cum = np.add.accumulate(d2, dtype=np.float32)
    last = n
    for i in range(n - 2):
        if cum[i] > np.float32(z) and i >= min_keep:
            last = i
            break
    return order[:max(last, 1)].tolist()


@pytest.mark.parametrize("n", [3, 10, 100, 2000])
@pytest.mark.parametrize("z", [0.0, 0.25, 0.5, 0.8, 0.95, 0.99])
@pytest.mark.parametrize("min_keep", [0, 1, 5])
def test_tail_free_matches_numpy(n, z, min_keep):
    rng = np.random.default_rng(n * 1000 + int(z * 100) + min_keep)
    for scale in (0.5, 3.0, 10.0):
        logits = (rng.standard_normal(n) * scale).astype(np.float32)
        kept = tail_free_reference_apply(logits.tolist(), z, min_keep)
        assert kept == tail_free_numpy(logits, z, min_keep)
        assert len(kept) >= 1
        if n - 2 > min_keep:
            assert len(kept) >= min(min_keep, n)
        # what is kept is the head of the descending order
        assert sorted(logits[kept].tolist(), reverse=True) == logits[kept].tolist()
        assert min(logits[kept]) >= max(np.delete(logits, kept), default=-np.inf)


def test_tail_free_disabled_and_tiny_inputs():
    logits = [0.1, 3.0, -2.0, 1.0]
    assert tail_free_reference_apply(logits, 1.0) == [0, 1, 2, 3]  # z >= 1: no-op
    assert tail_free_reference_apply([1.0, 2.0], 0.1) == [0, 1]     # fewer than 3: no-op
    assert tail_free_reference_apply([5.0], 0.1) == [0]


def test_tail_free_flat_distribution_keeps_something():
    logits = [1.0] * 50  # all second derivatives zero: the uniform fallback
    kept = tail_free_reference_apply(logits, 0.5)
    assert 1 <= len(kept) <= 50
    assert kept == tail_free_numpy(np.array(logits, dtype=np.float32), 0.5, 0)


def test_tail_free_smaller_z_keeps_fewer():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(500) * 4).astype(np.float32).tolist()
    sizes = [len(tail_free_reference_apply(logits, z)) for z in (0.1, 0.5, 0.9, 0.99)]
    assert sizes == sorted(sizes)


def test_tail_free_in_the_chain_samples_only_kept_tokens(ctx, model, vocab):
    prompt = vocab.tokenize("My favourite colour is")  # a spread-out next-token distribution
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    logits = ctx.logits(i).copy()
    z = 0.95
    kept = set(tail_free_reference_apply(logits.tolist(), z))
    assert 5 < len(kept) < 1000
    params = dict(temperature=1.0, tfs_z=z, samplers=("tfs_z", "temperature"), repeat_penalty=1.0)
    assert "llamacy-tail-free" in Sampler(model, SamplingParams(**params)).names
    seen = {Sampler(model, SamplingParams(seed=seed, **params)).sample(ctx, i) for seed in range(40)}
    assert seen <= kept and len(seen) > 1
    assert np.array_equal(ctx.logits(i), logits)  # the chain path leaves the logits row alone


# --- repetition penalties ---------------------------------------------------------------------

def penalties_numpy(logits: np.ndarray, history: list[int], *, repeat: float, freq: float, present: float,
                    last_n: int, penalize_nl: bool, nl: int) -> np.ndarray:
    out = logits.astype(np.float32).copy()
    window = history[-last_n:] if last_n > 0 else []
    for tok, count in Counter(window).items():
        if tok == nl and not penalize_nl:
            continue
        x = out[tok]
        x = x * np.float32(repeat) if x <= 0 else x / np.float32(repeat)
        out[tok] = x - np.float32(count * freq) - np.float32(present)
    return out


@pytest.fixture(scope="module")
def random_logits(model):
    rng = np.random.default_rng(1234)
    return (rng.standard_normal(model.n_vocab) * 5).astype(np.float32)


def _history(model, rng, n, include):
    hist = rng.integers(0, model.n_vocab, n).tolist()
    hist += list(include) * 3  # repeats: counts above one
    rng.shuffle(hist)
    return hist


CASES = {
    "repeat": dict(repeat_penalty=1.3, frequency_penalty=0.0, presence_penalty=0.0),
    "repeat-below-one": dict(repeat_penalty=0.8, frequency_penalty=0.0, presence_penalty=0.0),
    "frequency": dict(repeat_penalty=1.0, frequency_penalty=0.5, presence_penalty=0.0),
    "presence": dict(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.7),
    "negative-presence": dict(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=-0.4),
    "all": dict(repeat_penalty=1.2, frequency_penalty=0.3, presence_penalty=0.4),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("penalize_nl", [True, False])
def test_penalties_match_numpy(model, vocab, random_logits, case, penalize_nl):
    rng = np.random.default_rng(len(case))
    kw = CASES[case]
    last_n = 64
    hist = _history(model, rng, 20, include=[vocab.nl, 100, 200])
    params = SamplingParams(repeat_last_n=last_n, penalize_nl=penalize_nl, **kw)
    got = np.array(apply_penalties(model, params, hist, random_logits.tolist()), dtype=np.float32)
    want = penalties_numpy(random_logits, hist, repeat=kw["repeat_penalty"], freq=kw["frequency_penalty"],
                           present=kw["presence_penalty"], last_n=last_n, penalize_nl=penalize_nl, nl=vocab.nl)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    untouched = np.ones(model.n_vocab, bool)
    untouched[hist] = False
    assert np.array_equal(got[untouched], random_logits[untouched])
    if penalize_nl:
        assert got[vocab.nl] != random_logits[vocab.nl]
    else:
        assert got[vocab.nl] == random_logits[vocab.nl]


def test_penalties_both_signs(model):
    logits = np.zeros(model.n_vocab, np.float32)
    logits[10], logits[11], logits[12] = 4.0, -4.0, 0.0
    params = SamplingParams(repeat_penalty=2.0, repeat_last_n=8)
    got = apply_penalties(model, params, [10, 11, 12], logits.tolist())
    assert got[10] == pytest.approx(2.0)   # positive: divided
    assert got[11] == pytest.approx(-8.0)  # negative: multiplied
    assert got[12] == 0.0                  # zero stays zero


def test_repeat_last_n_window(model, random_logits):
    rng = np.random.default_rng(7)
    last_n = 10
    early = [1000, 1001, 1002]                            # only before the window
    window = [2000, 2001, 2000, 2000, 1000] + rng.integers(3000, 4000, 5).tolist()
    hist = early + rng.integers(5000, 6000, 30).tolist() + window
    params = SamplingParams(repeat_penalty=1.5, frequency_penalty=0.25, presence_penalty=0.1, repeat_last_n=last_n)
    got = np.array(apply_penalties(model, params, hist, random_logits.tolist()), dtype=np.float32)
    want = penalties_numpy(random_logits, hist, repeat=1.5, freq=0.25, present=0.1, last_n=last_n,
                           penalize_nl=True, nl=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got[1001] == random_logits[1001] and got[1002] == random_logits[1002]
    assert got[1000] != random_logits[1000]  # it is inside the window once
    # 2000 appears three times in the window: the frequency term counts all three
    base = random_logits[2000]
    scaled = base / 1.5 if base > 0 else base * 1.5
    assert got[2000] == pytest.approx(scaled - 3 * 0.25 - 0.1, rel=1e-5)


def test_repeat_last_n_longer_than_history(model, random_logits):
    hist = [5, 6, 7, 5]
    params = SamplingParams(repeat_penalty=1.3, repeat_last_n=1000)
    got = np.array(apply_penalties(model, params, hist, random_logits.tolist()), dtype=np.float32)
    want = penalties_numpy(random_logits, hist, repeat=1.3, freq=0.0, present=0.0, last_n=1000,
                           penalize_nl=True, nl=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("params", [
    SamplingParams(repeat_last_n=0, repeat_penalty=1.5, frequency_penalty=1.0),
    SamplingParams(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0),
])
def test_penalties_disabled(model, random_logits, params):
    assert not params.has_penalties
    got = apply_penalties(model, params, [1, 2, 3, 3], random_logits.tolist())
    assert np.array_equal(np.array(got, np.float32), random_logits)
    assert "llamacy-penalties" not in Sampler(model, params).names


def test_penalty_prompt_primes_history(model, random_logits):
    prompt_toks = [300, 301, 301]
    params = SamplingParams(repeat_penalty=1.4, frequency_penalty=0.2, repeat_last_n=64, penalty_prompt=prompt_toks)
    got = np.array(apply_penalties(model, params, [400], random_logits.tolist()), dtype=np.float32)
    want = penalties_numpy(random_logits, prompt_toks + [400], repeat=1.4, freq=0.2, present=0.0, last_n=64,
                           penalize_nl=True, nl=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("penalize_nl", [True, False])
def test_fast_path_penalises_the_logits_row_like_numpy(ctx, model, vocab, penalize_nl):
    prompt = vocab.tokenize(REPETITIVE_PROMPT + "\n\n" + REPETITIVE_PROMPT)
    assert vocab.nl in prompt
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    raw = ctx.logits(i).copy()
    kw = dict(repeat_penalty=1.6, frequency_penalty=0.2, presence_penalty=0.3, repeat_last_n=32)
    want = penalties_numpy(raw, prompt, repeat=1.6, freq=0.2, present=0.3, last_n=32, penalize_nl=penalize_nl,
                           nl=vocab.nl)
    s = Sampler(model, SamplingParams(temperature=0.0, penalize_nl=penalize_nl, **kw))
    assert s.fast_greedy
    s.accept_many(prompt)
    probs = s.top_probs(ctx, i, 3)
    assert probs[0][0] == int(np.argmax(want))
    assert s.sample(ctx, i) == int(np.argmax(want))
    # the fast path penalised the row in place
    np.testing.assert_allclose(ctx.logits(i), want, rtol=1e-6, atol=1e-6)
