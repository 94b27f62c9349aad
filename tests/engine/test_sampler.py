"""Sampler options through the real chain and the greedy fast path."""
from __future__ import annotations

import numpy as np
import pytest

from llamacy.engine.context import Batch
from llamacy.engine.sampling import Sampler, top_probs
from llamacy.engine.sampling_params import SamplingParams
from llamacy.errors import GrammarError, InvalidRequestError

from .helpers import PROMPT, REPETITIVE_PROMPT, generate, greedy

# Accepts every string: puts a grammar sampler in the chain without constraining it,
# which turns the fast path off (the chain path then runs for the same request).
PERMISSIVE = r"root ::= [^\x00]*"
N = 20


def _gen(ctx, model, params, prompt, n=N, prime=False):
    s = Sampler(model, params)
    if prime:
        s.accept_many(prompt)
    ctx.memory_clear()
    return generate(ctx, [s], [prompt], n)[0]


def _first_logits(ctx, vocab, text=PROMPT):
    prompt = vocab.tokenize(text)
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    return prompt, i, ctx.logits(i).copy()


# --- fast path flags ------------------------------------------------------------------------

@pytest.mark.parametrize("params, fast", [
    (SamplingParams(temperature=0.0), True),
    (SamplingParams(temperature=-1.0), True),
    (SamplingParams(temperature=0.8, top_k=1), True),
    (SamplingParams(temperature=0.8, top_k=1, logit_bias=[(5, 2.0)], repeat_penalty=1.3), True),
    (SamplingParams(temperature=0.0, grammar=PERMISSIVE), False),
    (SamplingParams(temperature=0.8, top_k=1, grammar=PERMISSIVE), False),
    (SamplingParams(temperature=0.8, top_k=1, samplers=("temperature", "top_p")), False),  # top_k not in chain
    (SamplingParams(temperature=0.8, top_k=1, mirostat=2), False),
    (SamplingParams(temperature=0.8), False),
    (SamplingParams(temperature=0.8, top_k=2), False),
])
def test_fast_greedy_flag(model, params, fast):
    assert Sampler(model, params).fast_greedy is fast


# --- greedy equivalences ----------------------------------------------------------------------

def test_top_k_1_equals_greedy(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    ref = _gen(ctx, model, SamplingParams(temperature=0.0, seed=1), prompt)
    assert _gen(ctx, model, SamplingParams(temperature=0.8, top_k=1, seed=2), prompt) == ref
    assert _gen(ctx, model, SamplingParams(temperature=1.5, top_k=1, top_p=0.5, seed=3), prompt) == ref


def test_fast_path_and_chain_path_agree_with_penalties(ctx, model, vocab):
    prompt = vocab.tokenize(REPETITIVE_PROMPT)
    pen = dict(repeat_penalty=1.5, frequency_penalty=0.3, presence_penalty=0.2, repeat_last_n=16, ignore_eos=True)
    plain = _gen(ctx, model, greedy(ignore_eos=True), prompt, n=24)
    fast_params = SamplingParams(temperature=0.0, **pen)
    assert Sampler(model, fast_params).fast_greedy
    fast = _gen(ctx, model, fast_params, prompt, n=24, prime=True)
    assert fast != plain  # the penalties change this output, so the comparison below means something

    chain_greedy = SamplingParams(temperature=0.0, grammar=PERMISSIVE, **pen)
    chain_top_k = SamplingParams(temperature=1.0, top_k=1, grammar=PERMISSIVE, seed=7, **pen)
    for params in (chain_greedy, chain_top_k):
        assert not Sampler(model, params).fast_greedy
        assert _gen(ctx, model, params, prompt, n=24, prime=True) == fast


def test_fast_path_and_chain_path_agree_without_penalties(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    fast = _gen(ctx, model, greedy(), prompt)
    assert _gen(ctx, model, greedy(grammar=PERMISSIVE), prompt) == fast


def test_fast_path_and_chain_path_agree_with_bias_on_a_penalised_token(ctx, model, vocab):
    prompt, _, logits = _first_logits(ctx, vocab, REPETITIVE_PROMPT)
    r = 2.0

    def pen(x):
        return x / r if x > 0 else x * r

    history = set(prompt)
    penalised = np.array([pen(x) if t in history else x for t, x in enumerate(logits.tolist())])
    best_other = int(np.argmax(penalised))
    v = penalised[best_other]
    # a history token with a positive logit that is not the penalised argmax
    cands = [t for t in history if t != best_other and logits[t] > 0 and pen(logits[t]) < v]
    assert v > 0 and cands
    x = max(cands, key=lambda t: logits[t])
    # bias so that pen(l) + b > v (penalty first) but pen(l + b) < v (bias first, as llama.cpp)
    b = float(((v - logits[x] / r) + (r * v - logits[x])) / 2)
    params = dict(repeat_penalty=r, repeat_last_n=64, logit_bias=[(x, b)])
    fast = _gen(ctx, model, SamplingParams(temperature=0.0, **params), prompt, n=1, prime=True)
    chain = _gen(ctx, model, SamplingParams(temperature=0.0, grammar=PERMISSIVE, **params), prompt, n=1, prime=True)
    assert chain == [best_other]
    assert fast == chain


# --- logit bias, ignore_eos -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["fast", "chain"])
def test_logit_bias_ban(ctx, model, vocab, path):
    prompt, _, logits = _first_logits(ctx, vocab)
    banned = int(np.argmax(logits))
    extra = {} if path == "fast" else {"grammar": PERMISSIVE}
    out = _gen(ctx, model, greedy(logit_bias=[(banned, None)], **extra), prompt, n=12)
    assert out[0] != banned
    assert out[0] == int(np.argsort(-logits)[1])  # the next choice
    assert banned not in out


def test_logit_bias_ban_with_sampling(ctx, model, vocab):
    prompt, _, logits = _first_logits(ctx, vocab)
    banned = int(np.argmax(logits))
    for seed in range(3):
        out = _gen(ctx, model, SamplingParams(temperature=1.0, seed=seed, logit_bias=[(banned, None)]), prompt, n=12)
        assert banned not in out


@pytest.mark.parametrize("path", ["fast", "chain"])
def test_logit_bias_positive_forces_token(ctx, model, vocab, path):
    prompt = vocab.tokenize(PROMPT)
    forced = vocab.tokenize(" banana")[0]
    extra = {"temperature": 0.0} if path == "fast" else {"temperature": 0.8, "seed": 3}
    out = _gen(ctx, model, SamplingParams(repeat_penalty=1.0, logit_bias=[(forced, 100.0)], **extra), prompt, n=5)
    assert out == [forced] * 5


def test_logit_bias_out_of_range(model):
    with pytest.raises(InvalidRequestError):
        Sampler(model, SamplingParams(logit_bias=[(model.n_vocab, 1.0)]))
    with pytest.raises(InvalidRequestError):
        Sampler(model, SamplingParams(logit_bias=[(-1, None)]))


@pytest.mark.parametrize("path", ["fast", "chain"])
def test_ignore_eos(ctx, model, vocab, path):
    prompt = vocab.tokenize(PROMPT)
    extra = {"temperature": 0.0} if path == "fast" else {"temperature": 0.8, "seed": 11}
    push_eos = [(vocab.eos, 100.0)]
    out = _gen(ctx, model, SamplingParams(logit_bias=push_eos, **extra), prompt, n=1)
    assert out == [vocab.eos]
    out = _gen(ctx, model, SamplingParams(logit_bias=push_eos, ignore_eos=True, **extra), prompt, n=8)
    assert not any(vocab.is_eog(t) for t in out)


# --- seeds ------------------------------------------------------------------------------------

def test_seed_reproduces(ctx, model, vocab):
    prompt = vocab.tokenize("Write a story about a dragon.")
    params = dict(temperature=1.0, ignore_eos=True)
    a = _gen(ctx, model, SamplingParams(seed=42, **params), prompt)
    b = _gen(ctx, model, SamplingParams(seed=42, **params), prompt)
    assert a == b and len(a) == N
    others = [_gen(ctx, model, SamplingParams(seed=s, **params), prompt) for s in (1, 2, 3)]
    assert any(o != a for o in others)


def test_all_samplers_in_chain_run_and_reproduce(ctx, model, vocab):
    prompt = vocab.tokenize(PROMPT)
    params = dict(temperature=0.9, top_k=20, tfs_z=0.95, typical_p=0.9, top_p=0.9, min_p=0.02, min_keep=2,
                  dynatemp_range=0.3, seed=5, ignore_eos=True)
    s = Sampler(model, SamplingParams(**params))
    assert s.names == ["logit-bias", "llamacy-penalties", "top-k", "llamacy-tail-free", "typical", "top-p", "min-p",
                       "temp-ext", "dist"]
    a = _gen(ctx, model, SamplingParams(**params), prompt, n=12)
    assert _gen(ctx, model, SamplingParams(**params), prompt, n=12) == a
    assert all(0 <= t < model.n_vocab and not vocab.is_eog(t) for t in a)


# --- grammar ----------------------------------------------------------------------------------

def _generate_until_eog(ctx, model, vocab, params, prompt, max_tokens=10):
    sampler = Sampler(model, params)
    ctx.memory_clear()
    batch = Batch(len(prompt), 1)
    i = batch.add_sequence(prompt, 0, 0)
    ctx.decode(batch)
    pos, out = len(prompt), []
    for _ in range(max_tokens):
        tok = sampler.sample(ctx, i)
        if vocab.is_eog(tok):
            return out, True
        out.append(tok)
        batch.clear()
        i = batch.add(tok, pos, 0, True)
        pos += 1
        ctx.decode(batch)
    return out, False


@pytest.mark.parametrize("temperature, seed", [(0.0, 0), (0.8, 1), (1.5, 2), (1.5, 3)])
def test_grammar_forces_choice(ctx, model, vocab, temperature, seed):
    prompt = vocab.tokenize("<|im_start|>user\nIs the sky green?<|im_end|>\n<|im_start|>assistant\n",
                            parse_special=True)
    params = SamplingParams(temperature=temperature, seed=seed, grammar='root ::= "yes" | "no"')
    out, ended = _generate_until_eog(ctx, model, vocab, params, prompt)
    assert ended
    assert vocab.detokenize(out) in ("yes", "no")


@pytest.mark.parametrize("grammar", [
    'root ::= ("yes" | "no"',        # unbalanced
    'root ::= foo',                  # undefined rule
    'answer ::= "yes"',              # no root rule
    'root ::= "unterminated',        # unterminated string
    'root ::= [a-',                  # unterminated char class
    'root ::= root "a"',             # left recursion
])
def test_bad_grammar(model, grammar):
    with pytest.raises(GrammarError):
        Sampler(model, SamplingParams(grammar=grammar))


# --- mirostat, sampler order ------------------------------------------------------------------

@pytest.mark.parametrize("mirostat, name", [(1, "mirostat"), (2, "mirostat-v2")])
def test_mirostat_runs(ctx, model, vocab, mirostat, name):
    prompt = vocab.tokenize(PROMPT)
    params = dict(temperature=0.8, mirostat=mirostat, mirostat_tau=5.0, mirostat_eta=0.1, seed=9, ignore_eos=True)
    s = Sampler(model, SamplingParams(**params))
    assert s.names[-1] == name and not s.fast_greedy
    a = _gen(ctx, model, SamplingParams(**params), prompt, n=12)
    assert len(a) == 12 and all(0 <= t < model.n_vocab and not vocab.is_eog(t) for t in a)
    assert _gen(ctx, model, SamplingParams(**params), prompt, n=12) == a


def test_default_chain_names(model):
    assert Sampler(model, SamplingParams()).names == ["llamacy-penalties", "top-k", "top-p", "min-p", "temp", "dist"]
    assert Sampler(model, SamplingParams(temperature=0.0)).names == ["llamacy-penalties", "greedy"]
    assert Sampler(model, SamplingParams(temperature=0.0, repeat_penalty=1.0)).names == ["greedy"]


def test_chain_prefix_order(model):
    s = Sampler(model, SamplingParams(temperature=0.0, logit_bias=[(5, 1.0)], grammar=PERMISSIVE))
    assert s.names == ["logit-bias", "llamacy-penalties", "grammar", "greedy"]


@pytest.mark.parametrize("order", [
    ("top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"),
    ("temperature", "min_p", "top_p", "typical_p", "tfs_z", "top_k"),
    ("min_p", "top_k", "temperature"),
    ("temperature",),
])
def test_samplers_order_respected(model, order):
    params = SamplingParams(temperature=0.7, top_k=30, tfs_z=0.9, typical_p=0.9, top_p=0.9, min_p=0.1,
                            repeat_penalty=1.0, samplers=order)
    names = {"top_k": "top-k", "tfs_z": "llamacy-tail-free", "typical_p": "typical", "top_p": "top-p",
             "min_p": "min-p", "temperature": "temp"}
    assert Sampler(model, params).names == [names[o] for o in order] + ["dist"]


def test_disabled_samplers_are_left_out(model):
    params = SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0, tfs_z=1.0, typical_p=1.0,
                            repeat_penalty=1.0, dynatemp_range=0.5)
    assert Sampler(model, params).names == ["temp-ext", "dist"]


def test_unknown_sampler_name(model):
    with pytest.raises(InvalidRequestError):
        Sampler(model, SamplingParams(samplers=("top_k", "nucleus")))


# --- probabilities -----------------------------------------------------------------------------

def test_sampler_top_probs_follow_bias(ctx, model, vocab):
    prompt, i, logits = _first_logits(ctx, vocab)
    best = int(np.argmax(logits))
    assert top_probs(ctx, i, 3)[0][0] == best
    s = Sampler(model, greedy(logit_bias=[(best, None)]))
    probs = s.top_probs(ctx, i, 5)
    assert best not in [t for t, _ in probs]
    assert probs[0][0] == int(np.argsort(-logits)[1])
    assert s.sample(ctx, i) == probs[0][0]
