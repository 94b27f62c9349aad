from libc.stdint cimport int8_t, int32_t, int64_t
from third_party.ggml.llama cimport llama_context, llama_sampler, llama_token
from third_party.ggml.ggml cimport ggml_tensor
from llamacy.engine.context cimport Context


ctypedef struct RowsTopK:
    int32_t k
    ggml_tensor * src        # the padded logits of the graph being built (NULL: not seen yet)
    ggml_tensor * ids        # [k, rows]: each row's k best token ids, in no order
    ggml_tensor * vals       # [1, k, rows]: their logits
    # one output row takes every row's candidates (one copy each of ids and logits, not one per row):
    int32_t want_rows        # set before a decode: the outputs it has (0: one copy per row)
    int32_t want_claim       # ... and the first of them whose sequence has a chain (its row)
    int32_t built_rows       # set while building: the graph's outputs, when one row takes them all
    int32_t built_claim      # ... and that row (-1: the graph copies per row); a reused graph keeps both
    int64_t bulk_graphs      # graphs built so


cdef class DeviceTopK:
    cdef Context ctx                 # (a closed one has freed its llama_context)
    cdef RowsTopK rows
    cdef readonly int32_t k
    cdef int32_t n_seq
    cdef llama_sampler ** chains     # per sequence: its attached chain, or NULL (host sampling)
    cdef bint usable                 # libllama took the first chain (else: everything on the host)
    cdef readonly int64_t switches   # attach/detach calls since start (each makes libllama re-plan its graph)
    cdef readonly bint bulk           # one copy of every row's candidates per step (not one per row)
    cdef bint ensure(self, int32_t seq, bint on) noexcept nogil
    cdef void claim(self, int32_t start, int32_t m, int32_t n_out, const int32_t * out_idx,
                    const int32_t * out_seq, const int8_t * flags) noexcept nogil
    cdef bint bulk_rows(self, llama_context * c_ctx, int32_t n_rows, float ** logits,
                        llama_token ** cand) noexcept nogil
