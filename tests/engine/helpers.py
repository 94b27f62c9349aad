"""Small generation loops shared by the engine tests (the same shape as the server's loop)."""
from __future__ import annotations

from llamacy.engine.context import Batch, Context
from llamacy.engine.sampling import Sampler, sample_batch
from llamacy.engine.sampling_params import SamplingParams

PROMPT = "The capital of France is"
REPETITIVE_PROMPT = "one two three one two three one two three one two three one two"


def greedy(**kw) -> SamplingParams:
    """Plain argmax: temperature 0, no repetition penalty unless asked for."""
    kw.setdefault("temperature", 0.0)
    kw.setdefault("repeat_penalty", 1.0)
    return SamplingParams(**kw)


def generate(ctx: Context, samplers: list[Sampler], prompts: list[list[int]], n_predict: int,
             seq_ids: list[int] | None = None) -> list[list[int]]:
    """Prefill every prompt in one batch, then one batch of one token per sequence per step,
    sampled with one ``sample_batch`` call. Returns each sequence's generated tokens."""
    seq_ids = list(range(len(prompts))) if seq_ids is None else seq_ids
    for s in seq_ids:
        ctx.seq_rm(s, -1, -1)
    batch = Batch(max(sum(len(p) for p in prompts), len(prompts)), 1)
    idx = [batch.add_sequence(p, 0, s) for p, s in zip(prompts, seq_ids)]
    ctx.decode(batch)
    pos = [len(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    for step in range(n_predict):
        toks = sample_batch(ctx, samplers, idx)
        for o, t in zip(out, toks):
            o.append(t)
        if step == n_predict - 1:
            break
        batch.clear()
        idx = [batch.add(t, pos[k], seq_ids[k], True) for k, t in enumerate(toks)]
        pos = [p + 1 for p in pos]
        ctx.decode(batch)
    return out


def continue_one(ctx: Context, sampler: Sampler, first: int, pos: int, n: int, seq_id: int = 0) -> list[int]:
    """Feed ``first`` at ``pos`` and sample ``n`` tokens one at a time with ``Sampler.sample``."""
    batch = Batch(1, 1)
    out = []
    tok = first
    for _ in range(n):
        batch.clear()
        i = batch.add(tok, pos, seq_id, True)
        ctx.decode(batch)
        tok = sampler.sample(ctx, i)
        out.append(tok)
        pos += 1
    return out
