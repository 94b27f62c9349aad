from libc.stdint cimport int32_t, uint32_t
from third_party.ggml.llama cimport llama_sampler, llama_token, llama_logit_bias, llama_token_data
from llamacy.engine.topk cimport TokenProb
from llamacy.engine.sampler_core cimport SamplerCore


cdef class Sampler:
    cdef SamplerCore c
    cdef llama_sampler * c_dry   # borrowed from ``c.chain`` (primed with the prompt), or NULL
    cdef readonly object params
    cdef readonly object model
    cdef _add_named(self, llama_sampler * chain, str name, size_t min_keep)
    cdef _add_dry(self)
    cdef _build_top_k_path(self, uint32_t seed, size_t min_keep)
