"""The device top-k (engine.device_sampling) in the C generation loop: outputs sampled from the
k candidates selected inside the decode graph give the tokens sampling the whole row gives, a
request that needs more candidates than k samples its whole row (its chain detached), and what
each request may use (Sampler.device_need)."""
from __future__ import annotations

import pytest

from llamacy.engine.context import Context
from llamacy.engine.device_sampling import DeviceTopK
from llamacy.engine.generation import Generator
from llamacy.engine.sampling import Sampler
from llamacy.engine.sampling_params import SamplingParams

from .conftest import N_THREADS
from .helpers import PROMPT, greedy
from .test_generation import run, tokens_by_seq

PROMPTS = [PROMPT, "def fibonacci(n):", "Once upon a time", "one two three one two three"]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64)


def generate(model, params, k):
    ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
    dev = DeviceTopK(ctx, 4, k) if k else None
    gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device_top_k=dev)
    for i, p in enumerate(params):
        gen.add(i, Sampler(model, p), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, 20)
    _, steps = run(gen)
    return [tokens_by_seq(steps)[i] for i in range(len(params))], gen.counters, dev


def test_device_need_counts_what_the_adjustments_can_push_down(model):
    assert Sampler(model, greedy()).device_need == 1
    assert Sampler(model, SamplingParams(temperature=0.0)).device_need == 1 + 64        # the default penalties
    assert Sampler(model, SamplingParams(**SAMPLED)).device_need == 40 + 64
    assert Sampler(model, SamplingParams(**SAMPLED, logit_bias=[(5, None), (6, -1.0)])).device_need == 40 + 64 + 2
    assert Sampler(model, greedy(ignore_eos=True)).device_need == 1 + len(model.vocab.eog_tokens())
    # the whole row: n_probs, a grammar, no top_k, a bias or penalty that raises logits
    assert Sampler(model, greedy(n_probs=2)).device_need == -1
    assert Sampler(model, greedy(grammar='root ::= "a"')).device_need == -1
    assert Sampler(model, SamplingParams(temperature=0.8, top_k=0)).device_need == -1
    assert Sampler(model, greedy(logit_bias=[(5, 1.0)])).device_need == -1
    assert Sampler(model, greedy(repeat_penalty=0.9)).device_need == -1
    assert Sampler(model, greedy(presence_penalty=-0.5)).device_need == -1


def test_the_same_tokens_as_the_whole_row(model):
    params = [greedy(), SamplingParams(temperature=0.0), SamplingParams(seed=11, **SAMPLED),
              SamplingParams(seed=5, temperature=1.0, logit_bias=[(28, -3.0)])]
    want, host, _ = generate(model, params, None)
    got, counters, dev = generate(model, params, 128)
    assert got == want
    assert counters["outputs"] == host["outputs"] == 4 * 20
    assert counters["device_outputs"] == 4 * 20 and host["device_outputs"] == 0
    assert counters["device_switches"] == 0 and all(dev.attached(s) for s in range(4))


def test_a_request_needing_more_than_k_samples_its_whole_row(model):
    """k = 66: the greedy request with the default penalties (65) and the plain one (1) use the
    device; the sampled ones (104, 105) need more, so their sequences' chains are detached."""
    params = [SamplingParams(temperature=0.0), greedy(), SamplingParams(seed=11, **SAMPLED),
              SamplingParams(seed=5, temperature=1.0, logit_bias=[(28, -3.0)])]
    want, _, _ = generate(model, params, None)
    got, counters, dev = generate(model, params, 66)
    assert got == want
    assert counters["device_outputs"] == 2 * 20
    assert counters["device_switches"] == 2
    assert [dev.attached(s) for s in range(4)] == [True, True, False, False]


def test_k_must_be_positive(model):
    ctx = Context(model, n_ctx=256, n_batch=64, n_seq_max=1, n_threads=N_THREADS)
    with pytest.raises(ValueError, match="k must be at least 1"):
        DeviceTopK(ctx, 1, 0)


def test_auto_uses_the_device_only_while_steps_have_many_outputs(model):
    """``device_auto``: on once the outputs per step average 3 (a moving average over about 16
    steps), off below 1.5 — all four chains attached at once, then detached at once after three
    of the requests end at 40 tokens and one goes on alone to 120."""
    params = [SamplingParams(temperature=0.0), SamplingParams(seed=11, **SAMPLED), greedy(),
              SamplingParams(seed=5, temperature=1.0)]
    lengths = [120, 40, 40, 40]

    def generate_auto(k):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
        dev = DeviceTopK(ctx, 4, k, attach=False) if k else None
        gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device_top_k=dev,
                        device_auto=True, device_on_at=3.0, device_off_at=1.5)
        for i, p in enumerate(params):
            gen.add(i, Sampler(model, p), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, lengths[i])
        _, steps = run(gen)
        return [tokens_by_seq(steps)[i] for i in range(4)], gen.counters, dev

    want, _, _ = generate_auto(None)
    got, counters, dev = generate_auto(128)
    assert got == want
    assert counters["outputs"] == sum(lengths)
    assert 0 < counters["device_outputs"] < counters["outputs"]
    assert counters["device_switches"] == 8                     # four attached together, four detached
    assert not any(dev.attached(s) for s in range(4))


def test_warm_up_leaves_nothing_behind(model):
    """``Generator.warm_up`` decodes each batch size of the loop (1 to 4 here) without the device
    top-k and with it; afterwards the memory holds nothing, the chains are as the loop keeps them
    (auto: detached, and no switch counted), and the requests get the tokens they get without it."""
    params = [SamplingParams(temperature=0.0), SamplingParams(seed=11, **SAMPLED), greedy(),
              SamplingParams(seed=5, temperature=1.0)]

    def generate_after(warm):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
        dev = DeviceTopK(ctx, 4, 128, attach=False)
        gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device_top_k=dev,
                        device_auto=True, device_on_at=3.0, device_off_at=1.5, pad_gaps=True)
        made = gen.warm_up() if warm else 0
        after = ([ctx.seq_pos_max(s) for s in range(4)], [dev.attached(s) for s in range(4)],
                 gen.counters["device_switches"])
        for i, p in enumerate(params):
            gen.add(i, Sampler(model, p), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, 24)
        _, steps = run(gen)
        return [tokens_by_seq(steps)[i] for i in range(4)], made, after

    want, _, _ = generate_after(False)
    got, made, after = generate_after(True)
    assert made == 2 * 4
    assert after == ([-1] * 4, [False] * 4, 0)
    assert got == want


def test_warm_up_takes_each_size_to_16_then_its_multiples(model):
    ctx = Context(model, n_ctx=40 * 64, n_batch=512, n_seq_max=40, n_threads=N_THREADS)
    gen = Generator(ctx, 40, 512, model.vocab.pieces, model.vocab.eog_tokens(), pad_gaps=True)
    assert gen.warm_up() == 16 + 2       # 1 to 16, 32, 40
    assert [ctx.seq_pos_max(s) for s in range(40)] == [-1] * 40
    gen.add(0, Sampler(model, greedy()), model.vocab.tokenize(PROMPT), 0, 64, 0, 4)
    with pytest.raises(RuntimeError, match="before the first request"):
        gen.warm_up()
