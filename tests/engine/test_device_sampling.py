"""Device sampling (engine.device_sampling) in the C generation loop: outputs sampled from the
k candidates selected inside the decode graph, and greedy tokens chosen there after the
request's logit bias and penalties, give the tokens sampling the whole row gives; a request
that needs more samples its whole row (its chain detached); and what each request may use
(Sampler.device_need, Sampler.device_entries)."""
from __future__ import annotations

import pytest

from llamacy.engine.context import Context
from llamacy.engine.device_sampling import DeviceSampling
from llamacy.engine.generation import Generator
from llamacy.engine.sampling import Sampler
from llamacy.engine.sampling_params import SamplingParams

from .conftest import N_THREADS
from .helpers import PROMPT, greedy
from .test_generation import run, tokens_by_seq

PROMPTS = [PROMPT, "def fibonacci(n):", "Once upon a time", "one two three one two three"]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64)


def generate(model, params, k, greedy_slots=0, n_predict=20, one_copy=True, **loop):
    ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
    dev = DeviceSampling(ctx, 4, k, greedy_slots=greedy_slots, one_copy=one_copy) if k else None
    gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device=dev, **loop)
    for i, p in enumerate(params):
        gen.add(i, Sampler(model, p), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, n_predict)
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
    n = sum(len(t) for t in want)   # 4 x 20 less what an end of generation cut short (CPUs' kernels differ)
    assert n > 4 * 10 and counters["outputs"] == host["outputs"] == n
    assert counters["device_outputs"] == n and host["device_outputs"] == 0
    assert counters["device_switches"] == 0 and all(dev.attached(s) for s in range(4))
    # the prompts' step is decoded as a micro-batch per prompt length: its results come back
    # per output; every later step's in one copy (the leader's row)
    assert counters["device_one_copy_outputs"] == n - 4
    apart, counters, _ = generate(model, params, 128, one_copy=False)
    assert apart == want and counters["device_outputs"] == n and counters["device_one_copy_outputs"] == 0


def test_results_that_do_not_fit_a_row_come_back_per_output(model):
    """k x (outputs + 1) above n_vocab: the top-k matrix cannot travel on one row."""
    params = [SamplingParams(seed=11, **SAMPLED), SamplingParams(seed=12, **SAMPLED)]
    want, _, _ = generate(model, params, None)
    k = model.vocab.n_vocab // 3 + 1
    got, counters, _ = generate(model, params, k)
    assert got == want
    assert counters["device_outputs"] == 2 * 20 and counters["device_one_copy_outputs"] == 0


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
        DeviceSampling(ctx, 1, 0)


def test_auto_uses_the_device_only_while_steps_have_many_outputs(model):
    """``device_auto``: on once the outputs per step average 3 (a moving average over about 16
    steps), off below 1.5 — all four chains attached at once, then detached at once after three
    of the requests end at 40 tokens and one goes on alone to 120."""
    params = [SamplingParams(temperature=0.0), SamplingParams(seed=11, **SAMPLED), greedy(),
              SamplingParams(seed=5, temperature=1.0)]
    lengths = [120, 40, 40, 40]

    def generate_auto(k):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
        dev = DeviceSampling(ctx, 4, k, attach=False) if k else None
        gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device=dev,
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


@pytest.mark.parametrize("greedy_slots", [0, 80])
def test_warm_up_leaves_nothing_behind(model, greedy_slots):
    """``Generator.warm_up`` decodes each batch size of the loop (1 to 4 here) without device
    sampling, with the device top-k and, if on, with the device greedy; afterwards the memory
    holds nothing, the chains are as the loop keeps them (auto: detached, and no switch
    counted), and the requests get the tokens they get without it."""
    params = [SamplingParams(temperature=0.0), SamplingParams(seed=11, **SAMPLED), greedy(),
              SamplingParams(seed=5, temperature=1.0)]

    def generate_after(warm):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
        dev = DeviceSampling(ctx, 4, 128, attach=False, greedy_slots=greedy_slots)
        gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device=dev,
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
    assert made == (3 if greedy_slots else 2) * 4
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


# greedy requests whose adjustments matter: strong penalties (each kind), a bias that raises and
# one that bans, ignore_eos, the newline spared — and a sampled one beside them (device top-k)
GREEDY_MIX = [
    SamplingParams(temperature=0.0, repeat_penalty=1.5, repeat_last_n=32),
    greedy(ignore_eos=True, logit_bias=[(28, 2.5), (13, None)]),
    SamplingParams(temperature=0.0, repeat_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3,
                   repeat_last_n=16, penalize_nl=False, logit_bias=[(11, -1.5)]),
    SamplingParams(seed=3, **SAMPLED),
]


def test_device_entries_counts_the_tokens_a_device_greedy_adjusts(model):
    n_eog = len(model.vocab.eog_tokens())
    assert Sampler(model, greedy()).device_entries == 0
    assert Sampler(model, SamplingParams(temperature=0.0)).device_entries == 64      # the default window
    assert Sampler(model, greedy(ignore_eos=True, logit_bias=[(28, 2.5)])).device_entries == n_eog + 1
    assert Sampler(model, greedy(repeat_penalty=0.9, repeat_last_n=8)).device_entries == 8   # raising is fine
    # not an argmax alone: n_probs, a grammar, sampling; nor a repeat penalty of 0 (0 / 0 on the device)
    assert Sampler(model, greedy(n_probs=2)).device_entries == -1
    assert Sampler(model, greedy(grammar='root ::= "a"')).device_entries == -1
    assert Sampler(model, SamplingParams(**SAMPLED)).device_entries == -1
    assert Sampler(model, greedy(repeat_penalty=0.0, repeat_last_n=8)).device_entries == -1


def test_device_greedy_gives_the_host_tokens(model):
    want, host, _ = generate(model, GREEDY_MIX, None, n_predict=40)
    got, counters, dev = generate(model, GREEDY_MIX, 128, greedy_slots=80, n_predict=40)
    assert got == want
    # the adjustments decide these tokens: without them the argmax differs
    plain, _, _ = generate(model, [greedy(), greedy(), greedy()], None, n_predict=40)
    assert all(want[i] != plain[i] for i in range(3))
    assert counters["outputs"] == sum(map(len, want))           # (those without ignore_eos may end early)
    assert counters["device_outputs"] == counters["outputs"]
    assert counters["device_greedy_outputs"] == counters["outputs"] - len(want[3])
    assert counters["device_one_copy_outputs"] == counters["outputs"] - 4       # (the prompts' step per output)
    assert [dev.mode_of(s) for s in range(4)] == ["greedy", "greedy", "greedy", "top-k"]


def test_device_greedy_with_throw_away_tokens_and_a_stable_shape(model):
    """pad_gaps with a stable shape from the first step: every token of the batch an output,
    idle and prompt-streaming sequences' too (their device greedy rows adjust nothing)."""
    loop = dict(pad_gaps=True, stable_on_at=0.5, stable_off_at=0.25)
    lengths = [40, 12, 30, 20]

    def generate_padded(k):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
        dev = DeviceSampling(ctx, 4, k, greedy_slots=80) if k else None
        gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device=dev, **loop)
        for i in (0, 2):
            gen.add(i, Sampler(model, GREEDY_MIX[i]), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, lengths[i])
        _, first = run(gen)
        for i in (1, 3):
            gen.add(i, Sampler(model, GREEDY_MIX[i]), model.vocab.tokenize(PROMPTS[i]), 0, 256, 0, lengths[i])
        _, second = run(gen)
        return tokens_by_seq(first + second), gen.counters

    want, _ = generate_padded(None)
    got, counters = generate_padded(128)
    assert got == want
    assert counters["pad_tokens"] > 0
    assert counters["device_greedy_outputs"] == sum(len(got[i]) for i in range(3))
    assert counters["device_one_copy_outputs"] > counters["device_outputs"] // 2


def test_a_greedy_request_touching_more_than_the_slots_uses_the_top_k(model):
    params = [SamplingParams(temperature=0.0, repeat_penalty=1.5, repeat_last_n=32)]
    want, _, _ = generate(model, params, None)
    got, counters, dev = generate(model, params, 128, greedy_slots=16)
    assert got == want
    assert counters["device_greedy_outputs"] == 0 and counters["device_outputs"] == 20
    assert dev.mode_of(0) == "top-k"
    with pytest.raises(ValueError, match="greedy_slots"):
        DeviceSampling(Context(model, n_ctx=256, n_batch=64, n_seq_max=1, n_threads=N_THREADS), 1, 8, greedy_slots=257)


def test_a_request_of_another_kind_takes_the_idle_sequences_along(model):
    """A switch costs libllama a re-plan and a buffer reserve (once per decode, however many
    switched): a request whose mode differs from its sequence's switches every idle sequence
    with it, so that the next requests find theirs ready."""
    ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
    dev = DeviceSampling(ctx, 4, 128, greedy_slots=80)          # attached: all four top-k
    gen = Generator(ctx, 4, 512, model.vocab.pieces, model.vocab.eog_tokens(), device=dev)
    modes = lambda: [dev.mode_of(s) for s in range(4)]
    requests = [(0, greedy()), (1, SamplingParams(seed=1, **SAMPLED)), (2, SamplingParams(seed=2, **SAMPLED)),
                (3, greedy(repeat_penalty=1.2, repeat_last_n=8))]
    seen = []
    for seq, params in requests:
        gen.add(seq, Sampler(model, params), model.vocab.tokenize(PROMPTS[seq]), 0, 256, 0, 4)
        run(gen)
        gen.release(seq)
        seen.append((modes(), gen.counters["device_switches"]))
    # (a change of chain counts two: a detach and an attach)
    assert seen == [(["greedy"] * 4, 8), (["top-k"] * 4, 16), (["top-k"] * 4, 16), (["greedy"] * 4, 24)]
