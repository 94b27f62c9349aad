from libc.stdint cimport int32_t
from third_party.ggml.llama cimport llama_sampler, llama_token, llama_logit_bias, llama_token_data
from llamacy.engine.topk cimport TokenProb
from llamacy.engine.custom_samplers cimport PenaltyState


ctypedef struct SamplerCore:
    llama_sampler * chain
    PenaltyState * pen       # borrowed: owned by the penalties sampler inside ``chain``
    bint fast_greedy         # argmax over in-place penalised/biased logits, no candidate array
    llama_logit_bias * bias  # used by the fast path (the chain has its own logit_bias sampler)
    int32_t n_bias
    int32_t n_vocab
    llama_sampler * grammar  # borrowed from ``chain``, or NULL
    llama_token_data * cur   # candidate buffer: n_vocab entries for the chain path, top_k for the top-k path
    llama_sampler * tail     # the top-k path: the samplers after top_k, then dist (owned), or NULL
    int32_t top_k            # with ``tail``: candidates selected from the adjusted row before ``tail``
    int32_t n_probs          # > 0: report the n_probs most likely tokens of the adjusted row
    float * scratch          # a row copy for n_probs on the chain path (n_vocab floats), or NULL
    int32_t device_need      # candidates a device top-k must return for sample_candidates to be exact
                             # (the request's top_k + the tokens its adjustments lower), or -1: never
    int32_t device_entries   # tokens a device greedy must adjust (logit bias + penalty window) for the
                             # argmax to be this request's, or -1: its argmax is not all it needs


# sample_core's results below zero
cdef enum:
    NO_LOGITS = -1           # the index has no logits
    NOTHING_ALLOWED = -2     # every candidate was ruled out (e.g. a completed grammar and no EOG)

cdef llama_token sample_core(SamplerCore * c, float * logits, TokenProb * probs, int32_t * n_probs_out) noexcept nogil
cdef llama_token accept_device_token(SamplerCore * c, llama_token tok) noexcept nogil
cdef llama_token sample_candidates(SamplerCore * c, const llama_token * ids, float * logits, int32_t n) noexcept nogil
