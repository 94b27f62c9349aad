from libc.stdint cimport int8_t, int32_t
from third_party.ggml.llama cimport llama_context, llama_token
from llamacy.engine.device_sampling cimport DeviceSampling
from llamacy.engine.loop_types cimport GenSeq, LoopCounters
from llamacy.engine.sampler_core cimport SamplerCore
from llamacy.engine.topk cimport TokenProb


cdef class StepOutputs:
    cdef llama_context * c_ctx
    cdef int32_t n_seq
    cdef int32_t n_vocab
    cdef int32_t max_n_probs
    cdef int32_t rows_per_thread  # whole-row outputs per sampling thread at least
    cdef int32_t n_rows           # outputs of the last resolve() sampled from their whole row
    cdef int32_t n_tokens         # outputs of the last resolve() whose token a device greedy chose
    # per output of the step, in the planner's order
    cdef llama_token * tok        # the sampled token (NOTHING_ALLOWED: none)
    cdef SamplerCore ** core      # its sampler; NULL: not in the decoded piece
    cdef float ** rows            # its logits row, or its device candidates' logits (NULL: a device token)
    cdef llama_token ** cand      # its device top-k candidates or device token, or NULL (a whole row)
    cdef int32_t * n_cand
    cdef TokenProb ** probs       # its n_probs results, in probs_buf
    cdef TokenProb * probs_buf
    cdef int32_t * n_probs

    cdef int32_t resolve(self, int32_t start, int32_t m, int32_t n_out, const int32_t * out_idx,
                         const int32_t * out_seq, const int8_t * flags, GenSeq * seqs, DeviceSampling dev,
                         LoopCounters * tally) noexcept nogil
    cdef void sample(self, int32_t n_out, int32_t n_pick) noexcept nogil
    cdef int32_t _threads(self, int32_t n_pick) noexcept nogil
    cdef void _sample_one(self, int32_t k) noexcept nogil
