"""DRY, XTC and top-n-sigma (libllama's samplers) in the chain: off by default, exact effects."""
from __future__ import annotations

import numpy as np
import pytest

from llamacy.engine.sampling import Sampler
from llamacy.engine.sampling_params import DEFAULT_SAMPLERS, SamplingParams

from .helpers import PROMPT, generate

SPEC_SAMPLERS = ("top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature")   # the 2024 spec's default
LIST_PROMPT = "A list: apple, banana, apple, banana, apple, banana, apple,"
NEVER = ("\u00a7\u00a7",)   # a DRY sequence breaker that does not occur here: nothing interrupts a match


def _gen(ctx, model, params, prompt, n):
    s = Sampler(model, params)
    s.accept_many(prompt)
    ctx.memory_clear()
    return generate(ctx, [s], [prompt], n)[0]


def _plain(**kw) -> SamplingParams:
    """Params as a request gives them: without ``samplers``, the spec's chain plus the newer
    samplers the options turn on (what the API layer's parse_sampling does)."""
    kw.setdefault("repeat_penalty", 1.0)
    kw.setdefault("ignore_eos", True)
    p = SamplingParams(**kw)
    if "samplers" not in kw:
        p.samplers = p.default_samplers()
    return p


def _first_logits(ctx, vocab, text):
    prompt = vocab.tokenize(text)
    ctx.memory_clear()
    from llamacy.engine.context import Batch
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    return prompt, ctx.logits(i).astype(np.float64)


# --- off by default: the chain and the outputs of before ------------------------------------------

def test_defaults_are_llama_cpp_s_and_off():
    p = SamplingParams()
    assert (p.xtc_probability, p.xtc_threshold, p.top_n_sigma) == (0.0, 0.1, -1.0)
    assert (p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n) == (0.0, 1.75, 2, -1)
    assert p.dry_sequence_breakers == ("\n", ":", "\"", "*")
    assert p.samplers == DEFAULT_SAMPLERS == tuple(SPEC_SAMPLERS)
    assert p.default_samplers() == DEFAULT_SAMPLERS
    assert not (p.dry_on or p.xtc_on or p.top_n_sigma_on or p.needs_chain)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_default_chain_is_the_spec_chain(model, temperature):
    new = Sampler(model, SamplingParams(temperature=temperature))
    old = Sampler(model, SamplingParams(temperature=temperature, samplers=SPEC_SAMPLERS))
    assert new.names == old.names
    assert not any(n in ("dry", "xtc", "top-n-sigma") for n in new.names)
    assert new.fast_greedy == (temperature == 0.0)


@pytest.mark.parametrize("temperature, seed", [(0.0, 0), (0.8, 42), (1.2, 7)])
def test_default_outputs_unchanged(ctx, model, vocab, temperature, seed):
    prompt = vocab.tokenize(PROMPT)
    new = _gen(ctx, model, SamplingParams(temperature=temperature, seed=seed, ignore_eos=True), prompt, 16)
    old = _gen(ctx, model, SamplingParams(temperature=temperature, seed=seed, ignore_eos=True,
                                          samplers=SPEC_SAMPLERS), prompt, 16)
    assert new == old


@pytest.mark.parametrize("params, fast", [
    (_plain(temperature=0.0), True),
    (_plain(temperature=0.0, dry_multiplier=0.8, dry_penalty_last_n=64), False),
    (_plain(temperature=0.0, xtc_probability=0.5), False),
    (_plain(temperature=0.0, top_n_sigma=1.0), False),
    (_plain(temperature=0.8, top_k=1, top_n_sigma=1.0), False),
    # off by their own values, or not named in samplers: the fast path stays
    (_plain(temperature=0.0, dry_multiplier=0.8, dry_penalty_last_n=0), True),
    (_plain(temperature=0.0, xtc_probability=0.5, xtc_threshold=0.6), True),
    (_plain(temperature=0.0, top_n_sigma=0.0), True),
    (_plain(temperature=0.0, dry_multiplier=0.8, dry_penalty_last_n=64, xtc_probability=1.0, top_n_sigma=1.0,
            samplers=SPEC_SAMPLERS), True),
])
def test_samplers_on_take_the_full_chain(model, params, fast):
    assert Sampler(model, params).fast_greedy is fast


def test_chain_order_follows_samplers(model):
    on = dict(temperature=0.7, top_k=30, top_p=0.9, min_p=0.05, dry_multiplier=0.8, dry_penalty_last_n=64,
              xtc_probability=0.5, xtc_threshold=0.1, top_n_sigma=1.5, ignore_eos=False)
    assert Sampler(model, _plain(**on)).names == [
        "dry", "top-n-sigma", "top-k", "top-p", "min-p", "xtc", "temp", "dist"]
    order = ("xtc", "temperature", "top_n_sigma", "dry")
    assert Sampler(model, _plain(samplers=order, **on)).names == ["xtc", "temp", "top-n-sigma", "dry", "dist"]
    # greedy: DRY and XTC (the two that can move the argmax) run before it, in the given order
    assert Sampler(model, _plain(samplers=order, **{**on, "temperature": 0.0})).names == ["xtc", "dry", "greedy"]
    # mirostat replaces the named samplers, as in llama.cpp
    assert Sampler(model, _plain(mirostat=2, **on)).names == ["temp", "mirostat-v2"]


# --- DRY ----------------------------------------------------------------------------------------------

def _extends_repeat(history: list[int], start: int, allowed: int) -> list[int]:
    """Positions p >= start where history[p] continues a run of ``allowed`` tokens that already
    occurred earlier followed by that same token (what DRY penalises)."""
    hits = []
    for p in range(start, len(history)):
        tail = history[p - allowed:p]
        for q in range(allowed, p):
            if history[q - allowed:q] == tail and history[q] == history[p]:
                hits.append(p)
                break
    return hits


def test_dry_stops_every_repetition_greedy_makes(ctx, model, vocab):
    prompt = vocab.tokenize(LIST_PROMPT)
    n, allowed = 24, 2
    plain = _gen(ctx, model, _plain(temperature=0.0), prompt, n)
    assert _extends_repeat(prompt + plain, len(prompt), allowed), "greedy output repeats itself (the premise)"
    params = _plain(temperature=0.0, dry_multiplier=1000.0, dry_allowed_length=allowed, dry_penalty_last_n=1024,
                    dry_sequence_breakers=NEVER)
    dry = _gen(ctx, model, params, prompt, n)
    assert _extends_repeat(prompt + dry, len(prompt), allowed) == []


def test_dry_sequence_breakers_interrupt_matches(ctx, model, vocab):
    """With ',' as a breaker no repeated run of the list spans two tokens, so DRY leaves the greedy
    repetition alone; without it the same options change the output."""
    prompt = vocab.tokenize(LIST_PROMPT)
    plain = _gen(ctx, model, _plain(temperature=0.0), prompt, 12)
    opts = dict(temperature=0.0, dry_multiplier=1000.0, dry_allowed_length=2, dry_penalty_last_n=1024)
    assert _gen(ctx, model, _plain(dry_sequence_breakers=(",",), **opts), prompt, 12) == plain
    assert _gen(ctx, model, _plain(dry_sequence_breakers=NEVER, **opts), prompt, 12) != plain


def test_dry_sees_the_prompt(ctx, model, vocab):
    """The prompt primes DRY (as llama.cpp feeds it the prompt): the first token is already penalised."""
    prompt = vocab.tokenize(LIST_PROMPT)
    plain = _gen(ctx, model, _plain(temperature=0.0), prompt, 1)
    params = _plain(temperature=0.0, dry_multiplier=1000.0, dry_penalty_last_n=1024, dry_sequence_breakers=NEVER)
    assert _gen(ctx, model, params, prompt, 1) != plain
    unprimed = Sampler(model, params)
    ctx.memory_clear()
    assert generate(ctx, [unprimed], [prompt], 1)[0] == plain


def test_dry_sampler_is_cloned_per_request(ctx, model, vocab):
    """Two samplers with the same options (one cached prototype) keep separate histories."""
    prompt = vocab.tokenize(LIST_PROMPT)
    params = dict(temperature=0.0, dry_multiplier=1000.0, dry_penalty_last_n=1024, dry_sequence_breakers=NEVER)
    first = _gen(ctx, model, _plain(**params), prompt, 10)
    assert _gen(ctx, model, _plain(**params), prompt, 10) == first


# --- XTC ----------------------------------------------------------------------------------------------

def test_xtc_picks_the_least_likely_token_above_the_threshold(ctx, model, vocab):
    prompt, logits = _first_logits(ctx, vocab, PROMPT)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    assert probs[order[1]] > 0.02
    for k in (1, 2):   # a threshold keeping the top k+1 tokens above it
        threshold = float((probs[order[k]] + probs[order[k + 1]]) / 2)
        assert threshold <= 0.5
        out = _gen(ctx, model, _plain(temperature=0.0, xtc_probability=1.0, xtc_threshold=threshold), prompt, 1)
        assert out == [int(order[k])]
    # probability 0, or a threshold above 0.5, is the plain argmax
    assert _gen(ctx, model, _plain(temperature=0.0, xtc_probability=0.0, xtc_threshold=0.01), prompt, 1) == [
        int(order[0])]
    assert _gen(ctx, model, _plain(temperature=0.0, xtc_probability=1.0, xtc_threshold=0.6), prompt, 1) == [
        int(order[0])]


# --- top-n-sigma ----------------------------------------------------------------------------------------

def test_top_n_sigma_keeps_the_tokens_within_n_sigma(ctx, model, vocab):
    prompt, logits = _first_logits(ctx, vocab, PROMPT)
    top = np.sort(logits)[::-1]
    std = float(logits.std())
    n = float((top[0] - (top[2] + top[3]) / 2) / std)   # keeps exactly the three best
    kept = set(int(t) for t in np.argsort(-logits)[:3])
    seen = set()
    for seed in range(12):
        params = _plain(temperature=5.0, top_k=0, top_p=1.0, min_p=0.0, top_n_sigma=n, seed=seed)
        (tok,) = _gen(ctx, model, params, prompt, 1)
        seen.add(tok)
    assert seen <= kept and len(seen) > 1


def test_small_top_n_sigma_is_greedy(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    greedy = _gen(ctx, model, _plain(temperature=0.0), prompt, 12)
    loose = dict(temperature=2.0, top_k=0, top_p=1.0, min_p=0.0)
    assert any(_gen(ctx, model, _plain(seed=s, **loose), prompt, 12) != greedy for s in range(3))
    for seed in range(3):
        assert _gen(ctx, model, _plain(seed=seed, top_n_sigma=1e-3, **loose), prompt, 12) == greedy
