from libc.stdint cimport int32_t, uint32_t
from third_party.ggml.llama cimport llama_sampler, llama_token, llama_token_data_array


ctypedef struct PenaltyState:
    int32_t n_vocab
    int32_t last_n
    float repeat
    float freq
    float present
    bint penalize_nl
    llama_token nl
    llama_token * ring
    int32_t ring_size
    int32_t ring_head
    int32_t * counts
    uint32_t * stamp
    uint32_t round


ctypedef struct TfsState:
    float z
    size_t min_keep


cdef PenaltyState * penalty_new(int32_t n_vocab, int32_t last_n, float repeat, float freq, float present,
                                bint penalize_nl, llama_token nl) noexcept nogil
cdef void penalty_free(PenaltyState * s) noexcept nogil
cdef void penalty_reset(PenaltyState * s) noexcept nogil
cdef void penalty_accept(PenaltyState * s, llama_token tok) noexcept nogil
cdef void penalty_apply_row(PenaltyState * s, float * logits) noexcept nogil
cdef void penalties_apply_array(PenaltyState * s, llama_token_data_array * cur_p) noexcept nogil
cdef void sort_candidates(llama_token_data_array * cur_p) noexcept nogil
cdef void tail_free_apply(llama_token_data_array * cur_p, float z, size_t min_keep) noexcept nogil
cdef llama_sampler * new_penalties_sampler(PenaltyState * state) noexcept nogil
cdef llama_sampler * new_tfs_sampler(float z, size_t min_keep) noexcept nogil


cdef inline float penalize(const PenaltyState * s, llama_token tok, float logit) noexcept nogil:
    cdef int32_t c = s.counts[tok]
    if c == 0 or (not s.penalize_nl and tok == s.nl):
        return logit
    if logit <= 0:
        logit *= s.repeat
    else:
        logit /= s.repeat
    return logit - (c * s.freq + s.present)     # llama.cpp's order: one subtraction
