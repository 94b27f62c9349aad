# cython: language_level=3
"""Selection over a logits row, GIL-free and allocation-free: the argmax, the top k candidates
(a bounded min-heap, one comparison for most of the vocabulary instead of a sort), and the
top n tokens under a softmax (for n_probs). Inline, for the samplers' hot paths."""
from libc.math cimport expf, INFINITY, isfinite
from libc.stdint cimport int32_t

from third_party.ggml.llama cimport llama_token, llama_token_data


ctypedef struct TokenProb:
    llama_token token
    float prob


cdef inline llama_token argmax(const float * logits, int32_t n) noexcept nogil:
    """Index of the first maximum: a blocked max (8 independent lanes, so the compiler can
    keep them in vector registers), then a scan for the first index holding it."""
    cdef float m[8]
    cdef int32_t i, j, n8 = n - n % 8
    cdef float mx
    for j in range(8):
        m[j] = -INFINITY
    for i in range(0, n8, 8):
        for j in range(8):
            m[j] = logits[i + j] if logits[i + j] > m[j] else m[j]
    mx = m[0]
    for j in range(1, 8):
        if m[j] > mx:
            mx = m[j]
    for i in range(n8, n):
        if logits[i] > mx:
            mx = logits[i]
    for i in range(n):
        if logits[i] == mx:
            return i
    return 0


cdef inline bint _worse(const llama_token_data * a, const llama_token_data * b) noexcept nogil:
    """Candidate order: higher logit first, then the lower token id."""
    return a.logit < b.logit or (a.logit == b.logit and a.id > b.id)


cdef inline void _sift_down(llama_token_data * h, int32_t n, int32_t i) noexcept nogil:
    """Restore the min-heap (worst candidate at the root) below ``i``."""
    cdef int32_t c
    cdef llama_token_data t
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and _worse(&h[c + 1], &h[c]):
            c += 1
        if not _worse(&h[c], &h[i]):
            return
        t = h[i]
        h[i] = h[c]
        h[c] = t
        i = c


cdef inline void _heapify(llama_token_data * h, int32_t k) noexcept nogil:
    """``h[0:k]`` into a min-heap (the worst candidate at the root)."""
    cdef int32_t i = k // 2 - 1
    while i >= 0:
        _sift_down(h, k, i)
        i -= 1


cdef inline void _sort_heap(llama_token_data * h, int32_t k) noexcept nogil:
    """Heap sort of the min-heap ``h[0:k]``: the worst goes to the back, the best ends first."""
    cdef llama_token_data t
    cdef int32_t m = k
    while m > 1:
        m -= 1
        t = h[0]
        h[0] = h[m]
        h[m] = t
        _sift_down(h, m, 0)


cdef inline int32_t select_top_k(const float * logits, int32_t n, int32_t k, llama_token_data * out) noexcept nogil:
    """The ``k`` best candidates of a row into ``out[0:k]``, sorted best first (ties: lower
    id first); returns how many (min(k, n))."""
    cdef int32_t i
    if k > n:
        k = n
    if k <= 0:
        return 0
    for i in range(k):
        out[i].id = i
        out[i].logit = logits[i]
        out[i].p = 0.0
    _heapify(out, k)
    cdef float threshold = out[0].logit
    for i in range(k, n):
        if logits[i] > threshold:      # one comparison for almost every token
            out[0].id = i
            out[0].logit = logits[i]
            _sift_down(out, k, 0)
            threshold = out[0].logit
    _sort_heap(out, k)
    return k


cdef inline int32_t select_top_k_of(const llama_token * ids, const float * logits, int32_t n, int32_t k,
                                    llama_token_data * out) noexcept nogil:
    """``select_top_k`` over ``n`` candidates given as (ids, logits) pairs instead of a row:
    the ``k`` best into ``out[0:k]``, best first (ties: lower id first); returns how many."""
    cdef int32_t i
    cdef llama_token_data t
    if k > n:
        k = n
    if k <= 0:
        return 0
    for i in range(k):
        out[i].id = ids[i]
        out[i].logit = logits[i]
        out[i].p = 0.0
    _heapify(out, k)
    for i in range(k, n):
        t.id = ids[i]
        t.logit = logits[i]
        t.p = 0.0
        if _worse(&out[0], &t):
            out[0] = t
            _sift_down(out, k, 0)
    _sort_heap(out, k)
    return k


cdef inline int32_t top_n_probs(const float * logits, int32_t n_vocab, int32_t n, TokenProb * out) noexcept nogil:
    """The ``n`` most likely tokens of a row under a softmax over every finite logit, best first
    (ties: lower id first); returns how many."""
    cdef int32_t i, j, filled = 0
    cdef float mx = -INFINITY
    cdef double total = 0.0
    if n > n_vocab:
        n = n_vocab
    for i in range(n_vocab):
        if logits[i] > mx:
            mx = logits[i]
    for i in range(n_vocab):
        if isfinite(logits[i]):
            total += expf(logits[i] - mx)
        if n <= 0:
            continue
        if filled < n or logits[i] > logits[out[filled - 1].token]:
            j = filled if filled < n else n - 1
            while j > 0 and logits[out[j - 1].token] < logits[i]:
                out[j] = out[j - 1]
                j -= 1
            out[j].token = i
            if filled < n:
                filled += 1
    if total <= 0.0:
        total = 1.0
    for j in range(filled):
        out[j].prob = <float> (expf(logits[out[j].token] - mx) / total)
    return filled
