"""The stable batch shape of a padding (GPU) loop under load: every sequence of the bucket gets a
token each step (idle ones a throw-away one), every token is an output, short prompt remainders
go in a token a step — so libllama reuses its decode graph — and every request still gets the
tokens of a plain loop, with the idle sequences' KV left as it was."""
from __future__ import annotations

from llamacy.engine.context import Context
from llamacy.engine.generation import ENTRY_PREFILL, Generator
from llamacy.engine.sampling import Sampler
from llamacy.engine.sampling_params import SamplingParams

from .conftest import N_THREADS
from .helpers import greedy
from .test_generation import run, tokens_by_seq

LONG = ("The history of the city begins with a small settlement on the river, where traders met to exchange "
        "salt, grain and cloth; over the centuries it grew into a busy market town with walls, a cathedral "
        "and a university that drew students from across the continent. Today its old streets are full of "
        "cafes, bookshops and small museums.")
SHORT = ["def fibonacci(n):", "Once upon a time", "The capital of France is"]


def generate(model, *, pad: bool, stable_on_at: float, stream_max: int = 16):
    ctx = Context(model, n_ctx=4 * 256, n_batch=64, n_seq_max=4, n_threads=N_THREADS)
    gen = Generator(ctx, 4, 64, model.vocab.pieces, model.vocab.eog_tokens(), pad_gaps=pad,
                    stable_on_at=stable_on_at, stable_off_at=-1.0, stream_max=stream_max)
    prompts = [model.vocab.tokenize(p) for p in [LONG, *SHORT]]
    assert len(prompts[0]) > 64 + 1 and len(prompts[0]) - 64 <= 16 and all(len(p) <= 16 for p in prompts[1:])
    params = [greedy(), SamplingParams(temperature=0.0), SamplingParams(seed=3, temperature=0.9),
              SamplingParams(seed=4, temperature=0.7, top_k=20)]
    lengths = [24, 8, 16, 12]     # sequences end at different steps: idle ones are padded
    for i, p in enumerate(prompts):
        gen.add(i, Sampler(model, params[i]), p, 0, 256, 0, lengths[i])
    _, steps = run(gen)
    prefill = {}
    for *_, entries in steps:
        for kind, seq, value, *_ in entries:
            if kind == ENTRY_PREFILL:
                prefill.setdefault(seq, []).append(value)
    kv = [ctx.seq_pos_max(s) for s in range(4)]
    return [tokens_by_seq(steps)[i] for i in range(4)], gen.counters, prefill, kv, prompts


def test_a_stable_shape_gives_the_plain_loops_tokens(model):
    want, plain, _, kv_want, prompts = generate(model, pad=False, stable_on_at=1e9)
    got, counters, prefill, kv, _ = generate(model, pad=True, stable_on_at=0.0)
    assert got == want
    assert kv == kv_want                      # the throw-away tokens left no KV behind
    # step 1 is the long prompt's first 64 tokens (the batch is full); then everything streams:
    # its last tokens and the short prompts, a token a step
    assert prefill[0] == [64] + [1] * (len(prompts[0]) - 64)
    assert all(prefill[s] == [1] * len(prompts[s]) for s in (1, 2, 3))
    assert counters["pad_tokens"] > 0
    assert counters["steps"] > plain["steps"]           # prompts now take a step a token
    # one shape from step 2 on: the graph of every later step is reused
    assert counters["graphs_reused"] == counters["steps"] - 2


def test_a_remainder_longer_than_stream_max_goes_in_one_chunk(model):
    """stream_max bounds what a stable step streams: with 2, the long prompt's remainder and the
    short prompts (longer than 2) each go in one chunk (a step of another shape), with the same
    tokens."""
    want, *_ = generate(model, pad=False, stable_on_at=1e9)
    got, counters, prefill, kv, prompts = generate(model, pad=True, stable_on_at=0.0, stream_max=2)
    assert all(len(p) > 2 for p in prompts[1:]) and len(prompts[0]) - 64 > 2
    assert got == want
    assert prefill[0] == [64, len(prompts[0]) - 64]
    assert all(prefill[s] == [len(prompts[s])] for s in (1, 2, 3))
    assert counters["graphs_reused"] < counters["steps"] - 2


def burst(model, *, pad: bool):
    """Four requests at once in sequences 0-3 of 8 — three of 6 tokens, one of 20 — with the
    stable shape on from 4 outputs a step, off below 2."""
    ctx = Context(model, n_ctx=8 * 128, n_batch=64, n_seq_max=8, n_threads=N_THREADS)
    gen = Generator(ctx, 8, 64, model.vocab.pieces, model.vocab.eog_tokens(), pad_gaps=pad,
                    stable_on_at=4.0, stable_off_at=2.0)
    for i, (text, n) in enumerate(zip([*SHORT, "Water boils at"], [6, 6, 6, 20])):
        gen.add(i, Sampler(model, SamplingParams(seed=i, temperature=0.8)), model.vocab.tokenize(text), 0, 128, 0, n)
    _, steps = run(gen)
    return tokens_by_seq(steps), gen.counters


def test_a_burst_is_stable_at_once_and_its_last_request_alone_is_not(model):
    """The step's own outputs decide, not their average (which so short a burst would never have
    brought to 4): the first step (four prompts, four outputs) is already padded to the bucket
    (sequences 4-7 a throw-away token each), and so are the five steps while all four generate;
    the step where one request is left (fewer than 2 outputs) is not, nor any after it."""
    want, _ = burst(model, pad=False)
    got, counters = burst(model, pad=True)
    assert got == want
    assert {s: len(t) for s, t in got.items()} == {0: 6, 1: 6, 2: 6, 3: 20}
    assert counters["steps"] == 20
    assert counters["pad_tokens"] == 6 * 4


def test_a_lone_request_after_a_burst_keeps_one_shape(model):
    """The moving average of outputs a step outlives a burst; a lone request right after one
    (fewer than stable_off_at outputs a step) must not turn the stable shape on with it — it
    would turn off again the step after, and on again while the average decays: a padded and an
    unpadded shape in turn, each a rebuilt graph. Its steps keep one shape, unpadded."""
    ctx = Context(model, n_ctx=8 * 128, n_batch=64, n_seq_max=8, n_threads=N_THREADS)
    gen = Generator(ctx, 8, 64, model.vocab.pieces, model.vocab.eog_tokens(), pad_gaps=True,
                    stable_on_at=4.0, stable_off_at=2.0)
    for i in range(8):     # 8 outputs a step for 40 steps: the average ends near 7
        gen.add(i, Sampler(model, greedy(ignore_eos=True)), model.vocab.tokenize(SHORT[i % 3]), 0, 128, 0, 40)
    run(gen)
    for i in range(8):
        gen.release(i)
    ctx.memory_clear()
    before = gen.counters
    gen.add(3, Sampler(model, greedy(ignore_eos=True)), model.vocab.tokenize(SHORT[1]), 0, 128, 0, 12)
    _, steps = run(gen)
    after = gen.counters
    assert len(tokens_by_seq(steps)[3]) == 12
    assert after["steps"] - before["steps"] == 12
    assert after["pad_tokens"] == before["pad_tokens"]
    # the prompt's step and the first token step build their graphs; the ten after reuse the last
    assert after["graphs_reused"] - before["graphs_reused"] == 10
    ctx.close()
