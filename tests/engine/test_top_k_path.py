"""The top-k path (select the k best candidates from the adjusted row, then the rest of the
chain on them) samples exactly as the whole chain does; a step's samplers run in parallel and
give what each gives alone; n_probs comes out of the same call."""
from __future__ import annotations

import pytest

from .helpers import generate
from llamacy.engine.sampling import Sampler, sample_step
from llamacy.engine.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "List three colours:"]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64)


def params(**kw) -> SamplingParams:
    return SamplingParams(**{**SAMPLED, **kw})


@pytest.mark.parametrize("kw", [{}, {"top_p": 1.0}, {"min_p": 0.0, "top_k": 5}, {"tfs_z": 0.9},
                                {"typical_p": 0.9}, {"dynatemp_range": 0.3}, {"top_k": 1000, "temperature": 1.5},
                                {"logit_bias": [(11, -5.0), (13, 3.0)]}, {"presence_penalty": 0.5}])
def test_top_k_path_samples_as_the_whole_chain(ctx, model, vocab, kw):
    prompts = [vocab.tokenize(p) for p in PROMPTS]
    for seed in (1, 123):
        fast = [Sampler(model, params(seed=seed, **kw)) for _ in prompts]
        full = [Sampler(model, params(seed=seed, **kw), top_k_path=False) for _ in prompts]
        assert all(s.top_k_path for s in fast) and not any(s.top_k_path for s in full)
        ctx.memory_clear()
        a = generate(ctx, fast, prompts, 16)
        ctx.memory_clear()
        b = generate(ctx, full, prompts, 16)
        assert a == b


@pytest.mark.parametrize("kw", [{"grammar": 'root ::= [a-z ]+'}, {"mirostat": 2}, {"top_k": 0},
                                {"samplers": ("top_p", "top_k", "temperature")}, {"xtc_probability": 0.5},
                                {"samplers": ("top_k", "min_p", "top_k", "temperature")}])
def test_other_chains_keep_the_whole_row_path(model, kw):
    p = params(**kw)
    if "xtc_probability" in kw:
        p.samplers = p.default_samplers()
    assert not Sampler(model, p).top_k_path


def test_parallel_step_equals_one_sampler_at_a_time(model, vocab):
    from llamacy.engine.context import Context
    ctx = Context(model, n_ctx=2048, n_batch=512, n_seq_max=16, n_threads=1)
    prompts = [vocab.tokenize(p) for p in PROMPTS * 4]
    mixed = [params(seed=i) if i % 2 else SamplingParams(temperature=0, repeat_penalty=1.0) for i in range(16)]
    together = generate(ctx, [Sampler(model, p) for p in mixed], prompts, 12)
    alone = []
    for p, prompt in zip(mixed, prompts):
        ctx.memory_clear()
        alone.append(generate(ctx, [Sampler(model, p)], [prompt], 12)[0])
    ctx.close()
    assert together == alone


def test_n_probs_come_with_the_step_and_match_top_probs(ctx, model, vocab):
    from llamacy.engine.context import Batch
    prompt = vocab.tokenize(PROMPTS[0])
    for kw in ({"temperature": 0.0, "repeat_penalty": 1.0}, SAMPLED, {**SAMPLED, "grammar": 'root ::= [a-z ]+'}):
        ctx.memory_clear()
        batch = Batch(len(prompt), 1)
        idx = batch.add_sequence(prompt, 0, 0)
        ctx.decode(batch)
        reference = Sampler(model, SamplingParams(**kw, n_probs=5))
        expected = reference.top_probs(ctx, idx, 5)
        s = Sampler(model, SamplingParams(**kw, n_probs=5))
        tokens, probs = sample_step(ctx, [s], [idx])
        assert [t for t, _ in probs[0]] == [t for t, _ in expected]
        assert [p for _, p in probs[0]] == pytest.approx([p for _, p in expected], rel=1e-5)
        assert sample_step(ctx, [Sampler(model, SamplingParams(**kw))], [idx])[1] == [None]
