# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sampling: a llama_sampler chain per request (libllama's samplers and the custom ones of
``custom_samplers``) and its C core (``sampler_core``: the greedy, top-k and chain paths that
sample one output), and one-call batched sampling.

``sample_batch`` samples every generating slot of a step in one call with the GIL released.
Greedy requests (temperature <= 0, or top_k == 1) without a grammar take a fast path:
penalties and logit bias applied in place to the logits row, then an argmax — no candidate
array, no sort.
"""
from libc.math cimport expf, fabsf, INFINITY, isfinite
from libc.stdint cimport int32_t, uint32_t, int64_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memcpy
from cython.parallel cimport prange
from cpython.bytes cimport PyBytes_AS_STRING

from third_party.ggml.llama cimport *
from llamacy.engine.model cimport Model, Vocab
from llamacy.engine.context cimport Context
from llamacy.engine.topk cimport TokenProb, top_n_probs
from llamacy.engine.sampler_core cimport sample_core, NO_LOGITS, NOTHING_ALLOWED
from llamacy.engine.custom_samplers cimport (PenaltyState, penalty_new, penalty_accept,
                                             penalty_apply_row, penalties_apply_array, new_penalties_sampler,
                                             new_tfs_sampler)

import collections
import logging
import os
import sys
import tempfile
import threading

from llamacy.errors import GrammarError, InvalidRequestError, LlamacyError
from llamacy.engine.sampling_params import SamplingParams, SAMPLER_NAMES
from llamacy.engine.custom_samplers import tail_free_reference_apply   # noqa: F401 (for tests)

_log = logging.getLogger("llamacy.engine.grammar")


# --- the Sampler ---------------------------------------------------------------------

NO_VALID_TOKEN = NOTHING_ALLOWED


cdef llama_sampler * init_grammar(Vocab vocab, bytes grammar):
    """``llama_sampler_init_grammar`` with its parser's messages kept out of the server's
    output: the parser fprintf()s to stderr, bypassing ``llama_log_set``, so fd 2 is pointed at
    a temporary file for the call and a rejection's text is logged through Python logging."""
    cdef llama_sampler * gs
    cdef const char * c_grammar = grammar
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            gs = llama_sampler_init_grammar(vocab.c_vocab, c_grammar, b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if gs == NULL:
            capture.seek(0)
            text = capture.read(4096).decode("utf-8", "replace").strip()
            _log.warning("grammar rejected: %s", text.splitlines()[0] if text else "parse error")
    return gs


cdef llama_sampler * _checked(llama_sampler * s, str what) except NULL:
    if s == NULL:
        raise LlamacyError(f"failed to create the {what} sampler")
    return s


cdef llama_sampler * _new_dry(Vocab vocab, float multiplier, float base, int32_t allowed_length,
                              int32_t penalty_last_n, tuple breakers) except NULL:
    encoded = [b.encode("utf-8") for b in breakers]
    cdef size_t n = len(encoded), i
    cdef const char ** c_breakers = <const char **> malloc(max(n, 1) * sizeof(const char *))
    cdef llama_sampler * dry
    if c_breakers == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            c_breakers[i] = PyBytes_AS_STRING(encoded[i])
        dry = llama_sampler_init_dry(vocab.c_vocab, multiplier, base, allowed_length, penalty_last_n, c_breakers, n)
    finally:
        free(c_breakers)
    return _checked(dry, "dry")


MAX_TOP_K_PATH = 1024   # above this, selecting the top k costs about as much as the whole chain


def _sampler_is_on(p, str name) -> bool:
    """Whether a named sampler adds anything to the chain with these options."""
    if name == "top_k":
        return p.top_k > 0
    if name == "tfs_z":
        return p.tfs_z < 1.0
    if name == "typical_p":
        return p.typical_p < 1.0
    if name == "top_p":
        return p.top_p < 1.0
    if name == "min_p":
        return p.min_p > 0.0
    if name == "temperature":
        return True
    return {"dry": p.dry_on, "xtc": p.xtc_on, "top_n_sigma": p.top_n_sigma_on}.get(name, False)


cdef class _SamplerPrototype:
    """A llama_sampler kept only to be cloned (owns it)."""
    cdef llama_sampler * c_smpl
    cdef object owner   # the Model it was built for: keeps id(model) in the cache key from being reused

    def __cinit__(self):
        self.c_smpl = NULL

    def __dealloc__(self):
        if self.c_smpl != NULL:
            llama_sampler_free(self.c_smpl)
            self.c_smpl = NULL


# DRY prototypes by (model, options, breakers), least recently used first (a few MB at most:
# each holds two int arrays of dry_penalty_last_n). Locked: samplers may be built on any thread.
DRY_PROTOTYPES_MAX = 8
_dry_prototypes = collections.OrderedDict()
_dry_prototypes_lock = threading.Lock()


cdef class Sampler:
    """A request's sampler: a llama_sampler chain built from a SamplingParams.

    The chain is [logit bias, penalties, grammar, <samplers in params.samplers order>, final],
    where final is greedy (temperature <= 0: only DRY and XTC of the named samplers run before
    it), mirostat 1/2 (no named samplers), or dist(seed). Samplers whose options turn them off
    are left out.
    """

    def __cinit__(self):
        self.c.chain = NULL
        self.c.pen = NULL
        self.c.bias = NULL
        self.c.n_bias = 0
        self.c.grammar = NULL
        self.c.cur = NULL
        self.c.tail = NULL
        self.c.top_k = 0
        self.c.n_probs = 0
        self.c.scratch = NULL
        self.c.device_need = -1
        self.c.device_entries = -1
        self.c_dry = NULL

    def __init__(self, Model model, params: SamplingParams, *, bint top_k_path=True):
        """``top_k_path=False`` keeps a top_k chain on the whole-row path (for comparisons)."""
        self.params = params
        self.model = model   # the chain's grammar sampler borrows the model's vocab
        cdef Vocab vocab = model.vocab
        cdef int32_t n_vocab = vocab.n_vocab
        self.c.n_vocab = n_vocab
        unknown = [s for s in params.samplers if s not in SAMPLER_NAMES]
        if unknown:
            raise InvalidRequestError(f"unknown sampler {unknown[0]!r} in 'samplers'")
        cdef uint32_t seed = (<int64_t> params.seed) & 0xFFFFFFFF
        cdef size_t min_keep = max(int(params.min_keep), 0)
        cdef llama_sampler_chain_params cp = llama_sampler_chain_default_params()
        cp.no_perf = True
        self.c.chain = _checked(llama_sampler_chain_init(cp), "chain")

        # logit bias: the spec's pairs, plus EOG tokens banned by ignore_eos
        bias = {}
        for tok, val in params.logit_bias:
            if not (0 <= tok < n_vocab):
                raise InvalidRequestError(f"logit_bias token {tok} out of range [0, {n_vocab})")
            bias[tok] = -INFINITY if val is None else bias.get(tok, 0.0) + float(val)
        if params.ignore_eos:
            for tok in vocab.eog_tokens():
                bias[tok] = -INFINITY
        self.c.n_bias = len(bias)
        if bias:
            self.c.bias = <llama_logit_bias *> malloc(len(bias) * sizeof(llama_logit_bias))
            if self.c.bias == NULL:
                raise MemoryError()
            for k, (tok, val) in enumerate(bias.items()):
                self.c.bias[k].token = tok
                self.c.bias[k].bias = val
            llama_sampler_chain_add(self.c.chain, _checked(
                llama_sampler_init_logit_bias(n_vocab, self.c.n_bias, self.c.bias), "logit_bias"))

        cdef PenaltyState * pen
        if params.has_penalties:
            pen = penalty_new(n_vocab, params.repeat_last_n, params.repeat_penalty, params.frequency_penalty,
                              params.presence_penalty, params.penalize_nl, vocab.nl)
            if pen == NULL:
                raise MemoryError()
            llama_sampler_chain_add(self.c.chain, _checked(new_penalties_sampler(pen), "penalties"))
            self.c.pen = pen

        cdef bytes g
        cdef llama_sampler * gs
        if params.grammar:
            g = params.grammar.encode()
            gs = init_grammar(vocab, g)
            if gs == NULL:
                raise GrammarError()
            llama_sampler_chain_add(self.c.chain, gs)
            self.c.grammar = gs

        self.c.fast_greedy = params.is_greedy and not params.needs_chain
        self.c.n_probs = max(0, min(int(params.n_probs), n_vocab))
        if params.temperature <= 0:
            # Of the named samplers only DRY and XTC can move the argmax (llama.cpp runs its whole
            # list before a zero temperature keeps the top token); the rest stay out, as before.
            for name in params.samplers:
                if name in ("dry", "xtc"):
                    self._add_named(self.c.chain, name, min_keep)
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_greedy())
        elif params.mirostat == 1:
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_temp(params.temperature))
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_mirostat(
                n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100))
        elif params.mirostat == 2:
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_temp(params.temperature))
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_mirostat_v2(
                seed, params.mirostat_tau, params.mirostat_eta))
        else:
            for name in params.samplers:
                self._add_named(self.c.chain, name, min_keep)
            llama_sampler_chain_add(self.c.chain, llama_sampler_init_dist(seed))
            if not self.c.fast_greedy and top_k_path:
                self._build_top_k_path(seed, min_keep)
        cdef int32_t n_cur = n_vocab if self.c.tail == NULL else self.c.top_k
        if not self.c.fast_greedy:
            self.c.cur = <llama_token_data *> malloc(n_cur * sizeof(llama_token_data))
            if self.c.cur == NULL:
                raise MemoryError()
        if self.c.n_probs > 0 and not self.c.fast_greedy and self.c.tail == NULL:
            self.c.scratch = <float *> malloc(n_vocab * sizeof(float))
            if self.c.scratch == NULL:
                raise MemoryError()
        if params.penalty_prompt:
            self.accept_many(params.penalty_prompt)
        self.c.device_need = -1
        lowers_only = all(val is None or val <= 0 for _, val in params.logit_bias) and (
            not params.has_penalties or (params.repeat_penalty >= 1.0 and params.frequency_penalty >= 0.0
                                         and params.presence_penalty >= 0.0))
        if (self.c.fast_greedy or self.c.tail != NULL) and self.c.n_probs == 0 and lowers_only:
            self.c.device_need = ((1 if self.c.fast_greedy else self.c.top_k) + self.c.n_bias
                                  + (max(int(params.repeat_last_n), 0) if params.has_penalties else 0))
        # the device greedy adds each bias and divides or multiplies by the repeat penalty as the
        # host does, so any bias or penalty values will do but a repeat penalty of 0 (0 / 0)
        self.c.device_entries = -1
        if self.c.fast_greedy and self.c.n_probs == 0 and (self.c.pen == NULL or params.repeat_penalty > 0.0):
            self.c.device_entries = self.c.n_bias + (max(self.c.pen.last_n, 0) if self.c.pen != NULL else 0)

    @property
    def device_entries(self) -> int:
        """How many tokens a device greedy adjusts for this request (-1: it cannot serve it)."""
        return self.c.device_entries

    @property
    def device_need(self) -> int:
        """How many device top-k candidates sampling needs to be exact (-1: the whole row)."""
        return self.c.device_need

    cdef _build_top_k_path(self, uint32_t seed, size_t min_keep):
        """When the chain's first truncating sampler is top_k (the common chain, e.g. the spec's
        default order), with nothing before it but logit bias and penalties: build ``tail`` (the
        samplers after top_k, then dist) so that sampling selects the k best candidates from the
        adjusted row and runs the rest on them only — the same distribution as the whole chain,
        at a fraction of the cost (no 49k-entry candidate copy and sort)."""
        p = self.params
        if p.grammar or p.dry_on or p.xtc_on or p.top_n_sigma_on or not (0 < p.top_k <= MAX_TOP_K_PATH):
            return
        on = [n for n in p.samplers if _sampler_is_on(p, n)]
        if not on or on[0] != "top_k" or "top_k" in on[1:]:
            return
        cdef llama_sampler_chain_params cp = llama_sampler_chain_default_params()
        cp.no_perf = True
        self.c.tail = _checked(llama_sampler_chain_init(cp), "chain")
        for name in on[1:]:
            self._add_named(self.c.tail, name, min_keep)
        llama_sampler_chain_add(self.c.tail, llama_sampler_init_dist(seed))
        self.c.top_k = min(p.top_k, self.c.n_vocab)

    cdef _add_named(self, llama_sampler * chain, str name, size_t min_keep):
        p = self.params
        if name == "dry":
            if p.dry_on:
                self._add_dry()
        elif name == "xtc":
            if p.xtc_on:
                llama_sampler_chain_add(chain, _checked(llama_sampler_init_xtc(
                    p.xtc_probability, p.xtc_threshold, min_keep, (<int64_t> p.seed) & 0xFFFFFFFF), "xtc"))
        elif name == "top_n_sigma":
            if p.top_n_sigma_on:
                llama_sampler_chain_add(chain, _checked(llama_sampler_init_top_n_sigma(p.top_n_sigma),
                                                               "top_n_sigma"))
        elif name == "top_k":
            if p.top_k > 0:
                llama_sampler_chain_add(chain, llama_sampler_init_top_k(p.top_k))
        elif name == "tfs_z":
            if p.tfs_z < 1.0:
                llama_sampler_chain_add(chain, _checked(new_tfs_sampler(p.tfs_z, min_keep), "tfs_z"))
        elif name == "typical_p":
            if p.typical_p < 1.0:
                llama_sampler_chain_add(chain, llama_sampler_init_typical(p.typical_p, min_keep))
        elif name == "top_p":
            if p.top_p < 1.0:
                llama_sampler_chain_add(chain, llama_sampler_init_top_p(p.top_p, min_keep))
        elif name == "min_p":
            if p.min_p > 0.0:
                llama_sampler_chain_add(chain, llama_sampler_init_min_p(p.min_p, min_keep))
        elif name == "temperature":
            if p.dynatemp_range > 0:
                llama_sampler_chain_add(chain, llama_sampler_init_temp_ext(
                    p.temperature, p.dynatemp_range, p.dynatemp_exponent))
            else:
                llama_sampler_chain_add(chain, llama_sampler_init_temp(p.temperature))

    cdef _add_dry(self):
        """libllama's DRY sampler, cloned from a cached prototype: building one tokenizes every
        sequence breaker against the whole vocabulary (~3 ms each), too slow to repeat per request."""
        p = self.params
        breakers = tuple(p.dry_sequence_breakers)
        key = (id(self.model), p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, breakers)
        cdef _SamplerPrototype proto
        cdef llama_sampler * dry
        with _dry_prototypes_lock:
            proto = _dry_prototypes.get(key)
            if proto is None:
                proto = _SamplerPrototype.__new__(_SamplerPrototype)
                proto.c_smpl = _new_dry(self.model.vocab, p.dry_multiplier, p.dry_base, p.dry_allowed_length,
                                        p.dry_penalty_last_n, breakers)
                proto.owner = self.model
                _dry_prototypes[key] = proto
                while len(_dry_prototypes) > DRY_PROTOTYPES_MAX:
                    _dry_prototypes.popitem(last=False)
            else:
                _dry_prototypes.move_to_end(key)
            dry = _checked(llama_sampler_clone(proto.c_smpl), "dry")
        llama_sampler_chain_add(self.c.chain, dry)
        self.c_dry = dry

    def __dealloc__(self):
        if self.c.chain != NULL:
            llama_sampler_free(self.c.chain)   # frees the custom samplers' state too
            self.c.chain = NULL
            self.c.pen = NULL
            self.c_dry = NULL
        free(self.c.bias)
        self.c.bias = NULL
        free(self.c.cur)
        self.c.cur = NULL
        if self.c.tail != NULL:
            llama_sampler_free(self.c.tail)
            self.c.tail = NULL
        free(self.c.scratch)
        self.c.scratch = NULL

    @property
    def fast_greedy(self) -> bool:
        return self.c.fast_greedy

    @property
    def top_k_path(self) -> bool:
        """Sampling selects the top_k candidates first, then runs the rest of the chain on them."""
        return self.c.tail != NULL

    @property
    def names(self) -> list:
        """Names of the samplers in the chain, in order."""
        return [llama_sampler_name(llama_sampler_chain_get(self.c.chain, i)).decode()
                for i in range(llama_sampler_chain_n(self.c.chain))]

    def accept_many(self, tokens) -> None:
        """Feed history to the repetition penalties and DRY only (the prompt, or penalty_prompt)."""
        if self.c.pen != NULL:
            for t in tokens:
                penalty_accept(self.c.pen, t)
        if self.c_dry != NULL:
            for t in tokens:
                if 0 <= t < self.c.n_vocab:
                    llama_sampler_accept(self.c_dry, t)

    def accept(self, llama_token token) -> None:
        """Feed a generated token to every sampler of the chain (grammar, penalties, mirostat).
        A token the grammar does not allow raises InvalidRequestError."""
        if not (0 <= token < self.c.n_vocab):
            raise InvalidRequestError(f"token {token} out of range [0, {self.c.n_vocab})")
        cdef llama_token_data one
        cdef llama_token_data_array arr
        if self.c.grammar != NULL:
            one.id = token
            one.logit = 0.0
            one.p = 0.0
            arr.data = &one
            arr.size = 1
            arr.selected = -1
            arr.sorted = False
            llama_sampler_apply(self.c.grammar, &arr)
            if not isfinite(one.logit):
                raise InvalidRequestError(f"token {token} is not allowed by the grammar here")
        if self.c.fast_greedy or self.c.tail != NULL:
            if self.c.pen != NULL:
                penalty_accept(self.c.pen, token)
            if self.c.tail != NULL:
                llama_sampler_accept(self.c.tail, token)
        else:
            llama_sampler_accept(self.c.chain, token)

    def reset(self) -> None:
        llama_sampler_reset(self.c.chain)
        if self.c.tail != NULL:
            llama_sampler_reset(self.c.tail)

    def top_probs(self, Context ctx, int32_t idx, int n) -> list:
        """The ``n`` most likely next tokens after this request's penalties and logit bias
        (a softmax over the adjusted logits). Call before ``sample``."""
        ctx._check()
        cdef float * logits = llama_get_logits_ith(ctx.c_ctx, idx)
        if logits == NULL:
            raise LlamacyError(f"no logits for output {idx}")
        cdef int32_t n_vocab = self.c.n_vocab, k
        cdef float * scratch = <float *> malloc(n_vocab * sizeof(float))
        if scratch == NULL:
            raise MemoryError()
        try:
            with nogil:
                memcpy(scratch, logits, n_vocab * sizeof(float))
                for k in range(self.c.n_bias):
                    scratch[self.c.bias[k].token] += self.c.bias[k].bias
                if self.c.pen != NULL:
                    penalty_apply_row(self.c.pen, scratch)
            return _top_n(scratch, n_vocab, n)
        finally:
            free(scratch)

    def sample(self, Context ctx, int32_t idx) -> int:
        """Choose the next token from output ``idx`` of the last decode, and accept it.
        Returns NO_VALID_TOKEN when nothing is allowed (a finished grammar with EOG banned)."""
        ctx._check()
        cdef llama_token tok
        with nogil:
            tok = sample_core(&self.c, llama_get_logits_ith(ctx.c_ctx, idx), NULL, NULL)
        if tok == NO_LOGITS:
            raise LlamacyError(f"no logits for output {idx}")
        return tok


def sample_batch(Context ctx, samplers, indices) -> list:
    """Sample every (sampler, output index) pair of a step in one call, GIL released.
    An entry is NO_VALID_TOKEN when that sampler had nothing to choose from."""
    return sample_step(ctx, samplers, indices)[0]


def sample_step(Context ctx, samplers, indices):
    """Sample every (sampler, output index) pair of a step in one GIL-free call, the samplers in
    parallel (OpenMP threads; each sampler is independent and reads only its own logits row).
    Returns (tokens, probs): probs[i] is [(token, prob), ...] for a sampler with n_probs, else
    None. A token is NO_VALID_TOKEN when that sampler had nothing to choose from."""
    ctx._check()
    cdef Py_ssize_t n = len(samplers), i
    if len(indices) != n:
        raise ValueError("samplers and indices differ in length")
    cdef SamplerCore ** cores = <SamplerCore **> malloc(max(n, 1) * sizeof(void *))
    cdef int32_t * idx = <int32_t *> malloc(max(n, 1) * sizeof(int32_t))
    cdef float ** rows = <float **> malloc(max(n, 1) * sizeof(void *))
    cdef llama_token * out = <llama_token *> malloc(max(n, 1) * sizeof(llama_token))
    cdef int32_t * n_out = <int32_t *> calloc(max(n, 1), sizeof(int32_t))
    cdef TokenProb ** probs = <TokenProb **> calloc(max(n, 1), sizeof(void *))
    cdef llama_context * c_ctx = ctx.c_ctx
    cdef int32_t k
    try:
        if cores == NULL or idx == NULL or rows == NULL or out == NULL or n_out == NULL or probs == NULL:
            raise MemoryError()
        for i in range(n):
            cores[i] = &(<Sampler?> samplers[i]).c
            idx[i] = indices[i]
            if cores[i].n_probs > 0:
                probs[i] = <TokenProb *> malloc(cores[i].n_probs * sizeof(TokenProb))
                if probs[i] == NULL:
                    raise MemoryError()
        with nogil:
            for i in range(n):   # sequentially: the first call reorders the context's outputs
                rows[i] = llama_get_logits_ith(c_ctx, idx[i])
            if n >= 4:   # as many threads as the decode used: one OpenMP pool, no oversubscription
                for i in prange(n, schedule="static", num_threads=llama_n_threads(c_ctx)):
                    out[i] = sample_core(cores[i], rows[i], probs[i], &n_out[i])
            else:
                for i in range(n):
                    out[i] = sample_core(cores[i], rows[i], probs[i], &n_out[i])
        for i in range(n):
            if out[i] == NO_LOGITS:
                raise LlamacyError(f"no logits for output {idx[i]}")
        return ([out[i] for i in range(n)],
                [[(probs[i][k].token, probs[i][k].prob) for k in range(n_out[i])] if probs[i] != NULL else None
                 for i in range(n)])
    finally:
        if probs != NULL:
            for i in range(n):
                free(probs[i])
        free(probs)
        free(n_out)
        free(cores)
        free(idx)
        free(rows)
        free(out)


cdef list _top_n(const float * logits, int32_t n_vocab, int n):
    """The ``n`` largest entries of a logits row under a softmax: [(token, prob)], best first."""
    n = max(0, min(n, n_vocab))
    cdef TokenProb * best = <TokenProb *> malloc(max(n, 1) * sizeof(TokenProb))
    cdef int32_t filled, k
    if best == NULL:
        raise MemoryError()
    try:
        with nogil:
            filled = top_n_probs(logits, n_vocab, n, best)
        return [(best[k].token, best[k].prob) for k in range(filled)]
    finally:
        free(best)


def top_probs(Context ctx, int32_t idx, int n) -> list:
    """The ``n`` most likely tokens of output ``idx`` under a plain softmax of the raw logits."""
    ctx._check()
    cdef float * logits = llama_get_logits_ith(ctx.c_ctx, idx)
    if logits == NULL:
        raise LlamacyError(f"no logits for output {idx}")
    return _top_n(logits, ctx.n_vocab, n)


def apply_penalties(Model model, params: SamplingParams, history, logits) -> list:
    """Apply the custom penalties sampler to a logits list after ``history`` (for tests)."""
    cdef Sampler s = Sampler(model, params)
    cdef size_t n = len(logits), i
    cdef llama_token_data * data = <llama_token_data *> malloc(max(n, 1) * sizeof(llama_token_data))
    cdef llama_token_data_array arr
    if s.c.pen == NULL:
        free(data)
        return list(logits)
    try:
        for t in history:
            penalty_accept(s.c.pen, t)
        for i in range(n):
            data[i].id = i
            data[i].logit = logits[i]
        arr.data = data
        arr.size = n
        arr.selected = -1
        arr.sorted = False
        penalties_apply_array(s.c.pen, &arr)
        return [arr.data[i].logit for i in range(n)]
    finally:
        free(data)



def validate_grammar(Model model, str grammar) -> None:
    """Raise GrammarError if libllama can't parse ``grammar`` (checked before a request queues)."""
    cdef llama_sampler * gs = init_grammar(model.vocab, grammar.encode())
    if gs == NULL:
        raise GrammarError()
    llama_sampler_free(gs)
