from libc.stdint cimport int32_t, int64_t
from third_party.ggml.llama cimport llama_context, llama_sampler
from third_party.ggml.ggml cimport ggml_tensor
from llamacy.engine.context cimport Context


ctypedef struct RowsTopK:
    int32_t k
    ggml_tensor * src        # the padded logits of the graph being built (NULL: not seen yet)
    ggml_tensor * ids        # [k, rows]: each row's k best token ids, in no order
    ggml_tensor * vals       # [1, k, rows]: their logits


cdef class DeviceTopK:
    cdef Context ctx                 # (a closed one has freed its llama_context)
    cdef RowsTopK rows
    cdef readonly int32_t k
    cdef int32_t n_seq
    cdef llama_sampler ** chains     # per sequence: its attached chain, or NULL (host sampling)
    cdef bint usable                 # libllama took the first chain (else: everything on the host)
    cdef readonly int64_t switches   # attach/detach calls since start (each makes libllama re-plan its graph)
    cdef bint ensure(self, int32_t seq, bint on) noexcept nogil
