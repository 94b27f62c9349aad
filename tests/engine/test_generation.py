"""The C generation loop: the same tokens as stepping by hand, and every decision it takes
alone — limits, EOG, stop strings on bytes, context shift, cancellation, pausing, n_probs, a
decode with no KV room retried in pieces, a failed decode reported with its sequences."""
from __future__ import annotations

import os
import threading

import pytest

from llamacy.engine.context import Context
from llamacy.engine.generation import (END_CANCELLED, END_EOG, END_LIMIT, END_PROMPT_ONLY, END_STOP, ENTRY_PREFILL,
                                       ENTRY_SHIFT, ENTRY_TOKEN, RUN_ERROR, RUN_IDLE, RUN_PAUSED, Generator)
from llamacy.engine.sampling import Sampler
from llamacy.engine.sampling_params import SamplingParams

from .conftest import N_THREADS
from .helpers import PROMPT, generate, greedy

PROMPTS = [PROMPT, "def fibonacci(n):", "Once upon a time"]


@pytest.fixture
def ctx4(model):
    c = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=N_THREADS)
    yield c
    c.close()


def make(ctx, model, **kw) -> Generator:
    vocab = model.vocab
    return Generator(ctx, 4, kw.pop("n_batch", 512), vocab.pieces, vocab.eog_tokens(), **kw)


def run(gen: Generator) -> tuple[int, list]:
    """run() on a thread while this one drains, as the IOLoop does (the ring holds 16 steps)."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", gen.run()))
    t.start()
    steps = []
    while t.is_alive():
        steps += gen.drain()
        t.join(0.001)
    return result["rc"], steps + gen.drain()


def tokens_by_seq(steps) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for *_, entries in steps:
        for kind, seq, value, decoded, flags, probs in entries:
            if kind == ENTRY_TOKEN and value >= 0:
                out.setdefault(seq, []).append(value)
    return out


def ends(steps) -> dict[int, int]:
    return {seq: flags for *_, entries in steps for kind, seq, _, _, flags, _ in entries
            if kind == ENTRY_TOKEN and flags}


def test_same_tokens_as_stepping_by_hand(ctx4, model, vocab):
    prompts = [vocab.tokenize(p) for p in PROMPTS]
    by_hand = generate(ctx4, [Sampler(model, greedy()) for _ in prompts], prompts, 12)
    ctx4.memory_clear()
    gen = make(ctx4, model)
    for i, p in enumerate(prompts):
        gen.add(i, Sampler(model, greedy()), p, 0, 256, 0, 12)
    rc, steps = run(gen)
    assert rc == RUN_IDLE
    assert [tokens_by_seq(steps)[i] for i in range(3)] == by_hand
    assert ends(steps) == {0: END_LIMIT, 1: END_LIMIT, 2: END_LIMIT}
    assert gen.done_seqs() == [0, 1, 2] and not gen.has_work
    prefill = [value for *_, entries in steps for kind, _, value, *_ in entries if kind == ENTRY_PREFILL]
    assert sum(prefill) == sum(len(p) for p in prompts)


def test_sampling_threads_do_not_change_the_tokens(model, vocab):
    """A step's outputs sampled one per thread (a GPU loop's setting) or many per thread give
    each sequence the same tokens: seeded, penalised, top-k and greedy requests side by side."""
    prompts = [vocab.tokenize(p) for p in PROMPTS + ["The capital of France is"]]
    params = [greedy(), SamplingParams(seed=5, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
              SamplingParams(seed=6, temperature=1.0, repeat_penalty=1.3), SamplingParams(seed=7, temperature=0.7)]
    got = []
    for rows_per_thread in (16, 1):
        ctx = Context(model, n_ctx=4 * 256, n_batch=512, n_seq_max=4, n_threads=4)
        try:
            gen = make(ctx, model, rows_per_thread=rows_per_thread)
            for i, p in enumerate(prompts):
                gen.add(i, Sampler(model, params[i]), p, 0, 256, 0, 16)
            rc, steps = run(gen)
            assert rc == RUN_IDLE
            got.append([tokens_by_seq(steps)[i] for i in range(4)])
        finally:
            ctx.close()
    assert all(len(t) == 16 for t in got[1])
    assert got[0] == got[1]


def test_a_cached_prefix_is_not_decoded_again(ctx4, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    gen = make(ctx4, model)
    gen.add(0, Sampler(model, greedy()), prompt, 0, 256, 0, 4)
    first = tokens_by_seq(run(gen)[1])[0]
    ctx4.seq_rm(0, len(prompt) - 1, -1)       # keep the prompt but its last token, as admission does
    gen.release(0)
    gen.add(0, Sampler(model, greedy()), prompt, len(prompt) - 1, 256, 0, 4)
    rc, steps = run(gen)
    prefill = [value for *_, entries in steps for kind, _, value, *_ in entries if kind == ENTRY_PREFILL]
    assert prefill == [1]
    assert tokens_by_seq(steps)[0] == first


def test_eog_ends_and_n_predict_zero_only_evaluates(ctx4, model, vocab):
    gen = make(ctx4, model)
    eog = vocab.eog_tokens()[0]
    gen.add(0, Sampler(model, greedy(logit_bias=[(eog, 100.0)])), vocab.tokenize(PROMPT), 0, 256, 0, -1)
    gen.add(1, Sampler(model, greedy()), vocab.tokenize(PROMPT), 0, 256, 0, 0)
    rc, steps = run(gen)
    assert ends(steps) == {0: END_EOG, 1: END_PROMPT_ONLY}
    assert tokens_by_seq(steps) == {0: [eog]}


def test_a_stop_string_ends_on_bytes_even_across_tokens(ctx4, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    gen = make(ctx4, model)
    gen.add(0, Sampler(model, greedy()), prompt, 0, 256, 0, 24)
    text = vocab.detokenize(tokens_by_seq(run(gen)[1])[0])     # " Paris. …" greedily
    word = text.strip().split()[1][:4]                          # a string spanning a token boundary
    stop = word.encode()
    for seq, stops in ((1, [stop]), (2, [b"never there", stop])):
        gen.add(seq, Sampler(model, greedy()), prompt, 0, 256, 0, 24, stops)
    rc, steps = run(gen)
    got = tokens_by_seq(steps)
    assert ends(steps) == {1: END_STOP, 2: END_STOP}
    for seq in (1, 2):
        out = vocab.detokenize(got[seq])
        assert word in out and word not in vocab.detokenize(got[seq][:-1])


def test_context_shift_in_the_loop(model, vocab):
    ctx = Context(model, n_ctx=64, n_batch=64, n_seq_max=1, n_threads=N_THREADS)
    gen = Generator(ctx, 1, 64, vocab.pieces, vocab.eog_tokens())
    prompt = vocab.tokenize(PROMPT)
    gen.add(0, Sampler(model, greedy(ignore_eos=True)), prompt, 0, 64, 4, 80)
    rc, steps = run(gen)
    shifts = [value for *_, entries in steps for kind, _, value, *_ in entries if kind == ENTRY_SHIFT]
    assert shifts and all(v > 0 for v in shifts)
    assert len(tokens_by_seq(steps)[0]) == 80
    assert ctx.seq_pos_max(0) < 64
    ctx.close()


def test_cancel_and_pause(ctx4, model, vocab):
    gen = make(ctx4, model)
    for i in range(2):
        gen.add(i, Sampler(model, greedy(ignore_eos=True)), vocab.tokenize(PROMPTS[i]), 0, 256, 0, -1)
    gen.pause()                               # a pause requested before the run still lets one step happen
    rc, steps = run(gen)
    assert rc == RUN_PAUSED and len(steps) == 1
    gen.cancel(1)
    gen.resume()
    gen.pause()
    rc, steps = run(gen)
    assert rc == RUN_PAUSED and ends(steps) == {1: END_CANCELLED}
    assert gen.state(0) == "active" and gen.state(1) == "done"
    with pytest.raises(ValueError):
        gen.release(0)                        # still running: only forced, between runs
    gen.release(0, force=True)
    assert not gen.has_work


def test_n_probs_come_with_the_tokens(ctx4, model, vocab):
    gen = make(ctx4, model, max_n_probs=5)
    gen.add(0, Sampler(model, greedy(n_probs=3)), vocab.tokenize(PROMPT), 0, 256, 0, 4)
    rc, steps = run(gen)
    probs = [p for *_, entries in steps for kind, _, value, _, _, p in entries if kind == ENTRY_TOKEN]
    assert len(probs) == 4 and all(len(p) == 3 for p in probs)
    toks = tokens_by_seq(steps)[0]
    assert [p[0][0] for p in probs] == toks          # greedy: the top token is the one chosen
    with pytest.raises(ValueError):
        gen.add(1, Sampler(model, greedy(n_probs=6)), vocab.tokenize(PROMPT), 0, 256, 0, 4)


def test_no_kv_room_is_retried_in_pieces(ctx4, model, vocab):
    prompts = [vocab.tokenize(p) for p in PROMPTS]
    gen = make(ctx4, model)
    for i, p in enumerate(prompts):
        gen.add(i, Sampler(model, greedy()), p, 0, 256, 0, 6)
    reference = tokens_by_seq(run(gen)[1])
    ctx4.memory_clear()
    seen = []
    gen.set_fault_hook(lambda n: seen.append(n) or (1 if n > 4 else 0))   # as llama_decode's 1 for > 4 tokens
    for i, p in enumerate(prompts):
        gen.release(i)
        gen.add(i, Sampler(model, greedy()), p, 0, 256, 0, 6)
    rc, steps = run(gen)
    assert tokens_by_seq(steps) == reference
    assert max(n for n in seen) > 4 and any(s[4] for s in steps)   # a step recorded its split


def test_a_failed_decode_reports_its_sequences(ctx4, model, vocab):
    gen = make(ctx4, model)
    gen.add(2, Sampler(model, greedy()), vocab.tokenize(PROMPT), 0, 256, 0, 6)

    def hook(n):
        raise MemoryError("injected")

    gen.set_fault_hook(hook)
    rc, steps = run(gen)
    assert rc == RUN_ERROR and steps == []
    exc, seqs = gen.failed_step()
    assert isinstance(exc, MemoryError) and seqs == [2]
    assert gen.state(2) == "done"


def test_the_ring_waits_for_a_slow_reader(ctx4, model, vocab):
    """More steps than the ring holds, drained only now and then: none is lost."""
    gen = make(ctx4, model)
    gen.add(0, Sampler(model, greedy(ignore_eos=True)), vocab.tokenize(PROMPT), 0, 256, 0, 40)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", gen.run()))
    t.start()
    steps = []
    while t.is_alive():
        t.join(0.05)
        steps += gen.drain()
    steps += gen.drain()
    assert result["rc"] == RUN_IDLE
    assert len(tokens_by_seq(steps)[0]) == 40


def test_notifies_through_the_eventfd(ctx4, model, vocab):
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        gen = Generator(ctx4, 4, 512, vocab.pieces, vocab.eog_tokens(), notify_fd=fd)
        gen.add(0, Sampler(model, greedy()), vocab.tokenize(PROMPT), 0, 256, 0, 3)
        rc, steps = run(gen)
        assert len(steps) == 3 and os.eventfd_read(fd) == 3
    finally:
        os.close(fd)


def test_requests_added_while_the_loop_runs(ctx4, model, vocab):
    """add() while run() steps other sequences: the loop takes the new request at its next step,
    drops the KV past the reused prefix itself (``trim``), and entries of the sequence's previous
    request still in the ring never reach the new one — the tokens are those of a quiet run."""
    a, b = vocab.tokenize(PROMPTS[1]), vocab.tokenize(PROMPTS[2])
    gen = make(ctx4, model)
    for seq, p in ((1, a), (2, b)):
        gen.add(seq, Sampler(model, greedy()), p, 0, 256, 0, 8)
    alone = tokens_by_seq(run(gen)[1])
    ctx4.memory_clear()
    for seq in (1, 2):
        gen.release(seq)
    gen.add(0, Sampler(model, greedy(ignore_eos=True)), vocab.tokenize(PROMPT), 0, 256, 0, 200)
    gen.add(1, Sampler(model, greedy()), a, 0, 256, 0, 8)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", gen.run()))
    t.start()
    before, after, readded = [], [], False
    while t.is_alive():
        if not readded and gen.state(1) == "done":
            # seq 1 ended in the loop; its last entries are still in the ring, undrained. The
            # next request reuses seq 1 with a different prompt: its KV (a + 8 tokens) must go.
            gen.release(1)
            gen.add(1, Sampler(model, greedy()), b, 0, 256, 0, 8, trim=True)
            readded = True
        (after if readded else before).extend(gen.drain())
        t.join(0.001)
    after += gen.drain()
    assert result["rc"] == RUN_IDLE and readded
    assert tokens_by_seq(after)[1] == alone[2]
    assert len(tokens_by_seq(before + after)[0]) == 200
    prefill = [value for *_, entries in after for kind, seq, value, *_ in entries if kind == ENTRY_PREFILL and seq == 1]
    assert sum(prefill) == len(b)
    assert ctx4.seq_pos_max(1) == len(b) + 8 - 2    # the last sampled token is never decoded


def test_padding_keeps_one_micro_batch_and_the_idle_kv(ctx4, model, vocab):
    """pad_gaps: an idle sequence between busy ones gets a throw-away token (libllama would
    otherwise decode the batch as two micro-batches, seq 0 and seq 2 apart), removed after the
    step — its cached KV is as before, and the busy sequences get the tokens they get alone."""
    prompts = [vocab.tokenize(p) for p in PROMPTS]
    plain = make(ctx4, model)
    for seq in (0, 2):
        plain.add(seq, Sampler(model, greedy()), prompts[seq], 0, 256, 0, 10)
    alone = tokens_by_seq(run(plain)[1])
    ctx4.memory_clear()
    gen = make(ctx4, model, pad_gaps=True)
    gen.add(1, Sampler(model, greedy()), prompts[1], 0, 256, 0, 3)   # leaves seq 1 idle with a cached KV
    run(gen)
    kv_before = ctx4.seq_pos_max(1)
    for seq in (0, 2):
        gen.add(seq, Sampler(model, greedy()), prompts[seq], 0, 256, 0, 10)
    rc, steps = run(gen)
    assert rc == RUN_IDLE
    assert tokens_by_seq(steps) == alone
    assert ctx4.seq_pos_max(1) == kv_before
    assert gen.counters["pad_tokens"] == 10          # one a step: the prompts' step and nine more
    assert 1 not in tokens_by_seq(steps)
