from libc.stdint cimport int32_t
from third_party.ggml.llama cimport llama_context, llama_memory_t, llama_batch
from llamacy.engine.model cimport Model


cdef class Context:
    cdef llama_context * c_ctx
    cdef llama_memory_t c_mem
    cdef readonly Model model
    cdef readonly int n_vocab
    cdef int _check(self) except -1
    cdef int _check_seq(self, int seq_id, bint any_ok=*) except -1


cdef class Batch:
    cdef llama_batch c_batch
    cdef readonly int32_t capacity
    cdef readonly int32_t n_seq_max
    cdef int32_t c_n_outputs
    cdef int add_token(self, int32_t token, int32_t pos, int32_t seq_id, bint logits) except -1
