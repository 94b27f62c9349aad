# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One output of one request sampled in C, GIL-free: ``sample_core`` from its whole logits
row (greedy: bias and penalties in place, then the argmax; top-k: the same, then the k best
selected from the row and the rest of the chain on them; otherwise the whole chain on a copy of
the row), ``sample_candidates`` from the candidates a device top-k returned,
``accept_device_token`` the token a device greedy chose. The ``Sampler``
(``sampling.pyx``) builds a request's ``SamplerCore``; the generation loop's outputs
(``step_outputs.pyx``) call these for every output of a step."""
from libc.math cimport isfinite
from libc.stdint cimport int32_t
from libc.string cimport memcpy

from third_party.ggml.llama cimport *
from llamacy.engine.topk cimport TokenProb, argmax, select_top_k, select_top_k_of, top_n_probs
from llamacy.engine.custom_samplers cimport penalty_accept, penalize, penalty_apply_row


cdef inline bint _apply_tail(SamplerCore * c, int32_t n, llama_token * tok) noexcept nogil:
    """The top-k path after selection: the rest of the chain on the n best candidates."""
    cdef llama_token_data_array arr
    arr.data = c.cur
    arr.size = n
    arr.selected = -1
    arr.sorted = True
    llama_sampler_apply(c.tail, &arr)
    if arr.selected < 0 or <size_t> arr.selected >= arr.size or not isfinite(arr.data[arr.selected].logit):
        return False
    tok[0] = arr.data[arr.selected].id
    llama_sampler_accept(c.tail, tok[0])
    return True


cdef llama_token sample_core(SamplerCore * c, float * logits, TokenProb * probs, int32_t * n_probs_out) noexcept nogil:
    """Choose and accept the next token from ``logits`` (an output row of the last decode, from
    llama_get_logits_ith — which reorders the outputs on its first call, so rows are resolved
    before samplers run in parallel); NO_LOGITS (a NULL row) / NOTHING_ALLOWED on failure.
    With ``probs``, also the request's n_probs most likely tokens (softmax of the logits after
    its logit bias and penalties), their count in ``n_probs_out``.

    Three paths, all in the chain's order: greedy (bias and penalties in place on the row, then
    the argmax), top-k (the same, then the k best candidates selected from the row and the rest
    of the chain on them only), and the full chain on a copy of the whole row."""
    cdef int32_t k, n
    cdef llama_token tok
    cdef llama_token_data_array arr
    if n_probs_out != NULL:
        n_probs_out[0] = 0
    if logits == NULL:
        return NO_LOGITS
    if c.fast_greedy or c.tail != NULL:
        for k in range(c.n_bias):
            logits[c.bias[k].token] += c.bias[k].bias
        if c.pen != NULL:
            penalty_apply_row(c.pen, logits)
        if c.n_probs > 0 and probs != NULL:
            n_probs_out[0] = top_n_probs(logits, c.n_vocab, c.n_probs, probs)
        if c.fast_greedy:
            tok = argmax(logits, c.n_vocab)
            if not isfinite(logits[tok]):
                return NOTHING_ALLOWED
        else:
            n = select_top_k(logits, c.n_vocab, c.top_k, c.cur)
            if not _apply_tail(c, n, &tok):
                return NOTHING_ALLOWED
        if c.pen != NULL:
            penalty_accept(c.pen, tok)
        return tok
    if c.n_probs > 0 and probs != NULL:
        memcpy(c.scratch, logits, c.n_vocab * sizeof(float))
        for k in range(c.n_bias):
            c.scratch[c.bias[k].token] += c.bias[k].bias
        if c.pen != NULL:
            penalty_apply_row(c.pen, c.scratch)
        n_probs_out[0] = top_n_probs(c.scratch, c.n_vocab, c.n_probs, probs)
    for k in range(c.n_vocab):
        c.cur[k].id = k
        c.cur[k].logit = logits[k]
        c.cur[k].p = 0.0
    arr.data = c.cur
    arr.size = c.n_vocab
    arr.selected = -1
    arr.sorted = False
    llama_sampler_apply(c.chain, &arr)
    if arr.selected < 0 or <size_t> arr.selected >= arr.size or not isfinite(arr.data[arr.selected].logit):
        return NOTHING_ALLOWED
    tok = arr.data[arr.selected].id
    llama_sampler_accept(c.chain, tok)
    return tok


cdef llama_token accept_device_token(SamplerCore * c, llama_token tok) noexcept nogil:
    """A greedy request's token chosen on the device (the argmax after its logit bias and
    penalties, ``device_sampling``'s greedy rows): accepted as ``sample_core`` would; an argmax
    out of range (-1: every logit was -inf) is NOTHING_ALLOWED."""
    if tok < 0 or tok >= c.n_vocab:
        return NOTHING_ALLOWED
    if c.pen != NULL:
        penalty_accept(c.pen, tok)
    return tok


cdef llama_token sample_candidates(SamplerCore * c, const llama_token * ids, float * logits, int32_t n) noexcept nogil:
    """``sample_core`` for a request whose ``device_need`` candidates came back from a device
    top-k (``ids``/``logits``, n of them, in no order) instead of the whole row: the same
    adjustments on the candidates (logit bias, penalties), then the argmax (greedy) or the
    top_k best and the rest of the chain. The same token as ``sample_core`` on the full row:
    the adjustments only lower logits, so the row's top_k after them are among its top
    (top_k + the tokens they touch) before them, which ``device_need`` counts."""
    cdef int32_t j, b, best
    cdef llama_token tok
    if logits == NULL or ids == NULL or n <= 0:
        return NO_LOGITS
    for b in range(c.n_bias):
        for j in range(n):
            if ids[j] == c.bias[b].token:
                logits[j] += c.bias[b].bias
                break
    if c.pen != NULL:
        for j in range(n):
            if 0 <= ids[j] < c.n_vocab:
                logits[j] = penalize(c.pen, ids[j], logits[j])
    if c.fast_greedy:
        best = 0
        for j in range(1, n):
            if logits[j] > logits[best] or (logits[j] == logits[best] and ids[j] < ids[best]):
                best = j
        if not isfinite(logits[best]):
            return NOTHING_ALLOWED
        tok = ids[best]
    else:
        if not _apply_tail(c, select_top_k_of(ids, logits, n, c.top_k, c.cur), &tok):
            return NOTHING_ALLOWED
    if c.pen != NULL:
        penalty_accept(c.pen, tok)
    return tok
