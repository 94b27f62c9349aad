# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The custom samplers: libllama has no sampler for three of the spec's options, so they are
written here as ``llama_sampler_i`` implementations — repetition penalties that can spare the
newline token (``penalize_nl``) and be primed with ``penalty_prompt``, and tail-free sampling
(``tfs_z``). ``sampling`` builds them into a request's chain; its fast paths use the penalty
state directly (``penalty_apply_row`` on a whole row, ``penalize`` on device candidates)."""
from libc.math cimport expf, fabsf
from libc.stdint cimport int32_t, uint32_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memcpy

from third_party.ggml.llama cimport *


# --- repetition penalties (custom sampler) -------------------------------------------

cdef PenaltyState * penalty_new(int32_t n_vocab, int32_t last_n, float repeat, float freq, float present,
                                bint penalize_nl, llama_token nl) noexcept nogil:
    cdef PenaltyState * s = <PenaltyState *> calloc(1, sizeof(PenaltyState))
    if s == NULL:
        return NULL
    s.n_vocab = n_vocab
    s.last_n = last_n
    s.repeat = repeat
    s.freq = freq
    s.present = present
    s.penalize_nl = penalize_nl
    s.nl = nl
    s.ring = <llama_token *> calloc(max(last_n, 1), sizeof(llama_token))
    s.counts = <int32_t *> calloc(n_vocab, sizeof(int32_t))
    s.stamp = <uint32_t *> calloc(n_vocab, sizeof(uint32_t))
    if s.ring == NULL or s.counts == NULL or s.stamp == NULL:
        penalty_free(s)
        return NULL
    return s


cdef void penalty_free(PenaltyState * s) noexcept nogil:
    if s != NULL:
        free(s.ring)
        free(s.counts)
        free(s.stamp)
        free(s)


cdef void penalty_reset(PenaltyState * s) noexcept nogil:
    cdef int32_t i
    for i in range(s.ring_size):
        s.counts[s.ring[i]] = 0
    s.ring_size = 0
    s.ring_head = 0


cdef void penalty_accept(PenaltyState * s, llama_token tok) noexcept nogil:
    if s.last_n <= 0 or tok < 0 or tok >= s.n_vocab:
        return
    if s.ring_size == s.last_n:
        s.counts[s.ring[s.ring_head]] -= 1
    else:
        s.ring_size += 1
    s.ring[s.ring_head] = tok
    s.counts[tok] += 1
    s.ring_head = (s.ring_head + 1) % s.last_n


cdef void penalty_apply_row(PenaltyState * s, float * logits) noexcept nogil:
    """Penalise a full logits row in place, each distinct recent token once."""
    cdef int32_t k
    cdef llama_token tok
    s.round += 1
    if s.round == 0:
        for k in range(s.n_vocab):
            s.stamp[k] = 0
        s.round = 1
    for k in range(s.ring_size):
        tok = s.ring[k]
        if s.stamp[tok] != s.round:
            s.stamp[tok] = s.round
            logits[tok] = penalize(s, tok, logits[tok])


cdef const char * _penalties_name(const llama_sampler * smpl) noexcept nogil:
    return "llamacy-penalties"


cdef void _penalties_accept(llama_sampler * smpl, llama_token token) noexcept nogil:
    penalty_accept(<PenaltyState *> smpl.ctx, token)


cdef void penalties_apply_array(PenaltyState * s, llama_token_data_array * cur_p) noexcept nogil:
    """Penalise a candidate array in place (candidates are distinct: each token once)."""
    cdef size_t i
    cdef llama_token tok
    if s.ring_size == 0:
        return
    for i in range(cur_p.size):
        tok = cur_p.data[i].id
        if 0 <= tok < s.n_vocab and s.counts[tok] > 0:
            cur_p.data[i].logit = penalize(s, tok, cur_p.data[i].logit)
    cur_p.sorted = False


cdef void _penalties_apply(llama_sampler * smpl, llama_token_data_array * cur_p) noexcept nogil:
    penalties_apply_array(<PenaltyState *> smpl.ctx, cur_p)


cdef void _penalties_reset(llama_sampler * smpl) noexcept nogil:
    penalty_reset(<PenaltyState *> smpl.ctx)


cdef llama_sampler * _penalties_clone(const llama_sampler * smpl) noexcept nogil:
    cdef PenaltyState * s = <PenaltyState *> smpl.ctx
    cdef PenaltyState * c = penalty_new(s.n_vocab, s.last_n, s.repeat, s.freq, s.present, s.penalize_nl, s.nl)
    if c == NULL:
        return NULL
    memcpy(c.ring, s.ring, max(s.last_n, 1) * sizeof(llama_token))
    memcpy(c.counts, s.counts, s.n_vocab * sizeof(int32_t))
    c.ring_size = s.ring_size
    c.ring_head = s.ring_head
    return llama_sampler_init(&penalties_iface, c)


cdef void _penalties_free(llama_sampler * smpl) noexcept nogil:
    penalty_free(<PenaltyState *> smpl.ctx)


cdef llama_sampler_i penalties_iface
penalties_iface.name = _penalties_name
penalties_iface.accept = _penalties_accept
penalties_iface.apply = _penalties_apply
penalties_iface.reset = _penalties_reset
penalties_iface.clone = _penalties_clone
penalties_iface.free = _penalties_free


# --- tail-free sampling (custom sampler) ---------------------------------------------

cdef int _cmp_logit_desc(const void * a, const void * b) noexcept nogil:
    cdef float la = (<const llama_token_data *> a).logit
    cdef float lb = (<const llama_token_data *> b).logit
    return (la < lb) - (la > lb)


cdef void sort_candidates(llama_token_data_array * cur_p) noexcept nogil:
    if not cur_p.sorted:
        qsort(cur_p.data, cur_p.size, sizeof(llama_token_data), _cmp_logit_desc)
        cur_p.sorted = True


cdef void softmax_sorted(llama_token_data_array * cur_p) noexcept nogil:
    cdef size_t i
    cdef float mx = cur_p.data[0].logit
    cdef double total = 0.0
    for i in range(cur_p.size):
        cur_p.data[i].p = expf(cur_p.data[i].logit - mx)
        total += cur_p.data[i].p
    for i in range(cur_p.size):
        cur_p.data[i].p = <float> (cur_p.data[i].p / total)


cdef void tail_free_apply(llama_token_data_array * cur_p, float z, size_t min_keep) noexcept nogil:
    """Tail-free sampling: cut where the cumulative normalised |2nd derivative| of the sorted
    probabilities passes ``z`` (keeping at least ``min_keep`` candidates)."""
    if z >= 1.0 or cur_p.size <= 2:
        return
    sort_candidates(cur_p)
    softmax_sorted(cur_p)
    cdef size_t n = cur_p.size, i
    cdef float * d2 = <float *> malloc((n - 2) * sizeof(float))
    if d2 == NULL:
        return
    cdef float d1_i, d1_next, total = 0.0, cum = 0.0
    for i in range(n - 2):
        d1_i = cur_p.data[i].p - cur_p.data[i + 1].p
        d1_next = cur_p.data[i + 1].p - cur_p.data[i + 2].p
        d2[i] = fabsf(d1_i - d1_next)
        total += d2[i]
    if total > 1e-6:
        for i in range(n - 2):
            d2[i] /= total
    else:
        for i in range(n - 2):
            d2[i] = 1.0 / (n - 2)
    cdef size_t last_idx = n
    for i in range(n - 2):
        cum += d2[i]
        if cum > z and i >= min_keep:
            last_idx = i
            break
    free(d2)
    cur_p.size = max(last_idx, <size_t> 1)


cdef const char * _tfs_name(const llama_sampler * smpl) noexcept nogil:
    return "llamacy-tail-free"


cdef void _tfs_apply(llama_sampler * smpl, llama_token_data_array * cur_p) noexcept nogil:
    cdef TfsState * s = <TfsState *> smpl.ctx
    tail_free_apply(cur_p, s.z, s.min_keep)


cdef llama_sampler * _tfs_clone(const llama_sampler * smpl) noexcept nogil:
    cdef TfsState * c = <TfsState *> malloc(sizeof(TfsState))
    if c == NULL:
        return NULL
    memcpy(c, smpl.ctx, sizeof(TfsState))
    return llama_sampler_init(&tfs_iface, c)


cdef void _tfs_free(llama_sampler * smpl) noexcept nogil:
    free(smpl.ctx)


cdef llama_sampler_i tfs_iface
tfs_iface.name = _tfs_name
tfs_iface.accept = NULL
tfs_iface.apply = _tfs_apply
tfs_iface.reset = NULL
tfs_iface.clone = _tfs_clone
tfs_iface.free = _tfs_free


cdef llama_sampler * new_penalties_sampler(PenaltyState * state) noexcept nogil:
    """The penalties sampler owning ``state`` (freed with it), or NULL."""
    return llama_sampler_init(&penalties_iface, state)


cdef llama_sampler * new_tfs_sampler(float z, size_t min_keep) noexcept nogil:
    """The tail-free sampler (``z`` < 1), or NULL."""
    cdef TfsState * tfs = <TfsState *> malloc(sizeof(TfsState))
    if tfs == NULL:
        return NULL
    tfs.z = z
    tfs.min_keep = min_keep
    return llama_sampler_init(&tfs_iface, tfs)


def tail_free_reference_apply(logits, float z, size_t min_keep=0) -> list:
    """Run the tail-free sampler on a logits list; returns the kept token ids (for tests)."""
    cdef size_t n = len(logits), i
    cdef llama_token_data * data = <llama_token_data *> malloc(max(n, 1) * sizeof(llama_token_data))
    cdef llama_token_data_array arr
    try:
        for i in range(n):
            data[i].id = i
            data[i].logit = logits[i]
            data[i].p = 0
        arr.data = data
        arr.size = n
        arr.selected = -1
        arr.sorted = False
        tail_free_apply(&arr, z, min_keep)
        return [arr.data[i].id for i in range(arr.size)]
    finally:
        free(data)
