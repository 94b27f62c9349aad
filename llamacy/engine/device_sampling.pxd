from libc.stdint cimport int8_t, int32_t, int64_t
from third_party.ggml.llama cimport llama_context, llama_sampler, llama_token
from third_party.ggml.ggml cimport ggml_tensor
from llamacy.engine.context cimport Context
from llamacy.engine.sampler_core cimport SamplerCore


cdef enum:
    # how a sequence's outputs come back (DeviceSampling.modes)
    MODE_HOST = 0       # its whole logits row (no chain)
    MODE_TOP_K = 1      # its k best candidates and their logits (the rows-top-k chain)
    MODE_GREEDY = 2     # its argmax after its request's logit bias and penalties (the rows-greedy chain)


ctypedef struct RowsTopK:
    int32_t k
    ggml_tensor * src        # the padded logits of the graph being built (NULL: not seen yet)
    ggml_tensor * ids        # [k, rows]: each row's k best token ids, in no order
    ggml_tensor * vals       # [1, k, rows]: their logits


ctypedef struct RowsGreedy:
    int32_t slots            # adjusted tokens per row (a request's bias + penalty window, then untouched ones)
    int32_t n_vocab
    ggml_tensor * src        # as RowsTopK's
    int64_t n_rows           # src's rows (the step's outputs + libllama's padding row)
    ggml_tensor * ids        # input I32 [slots * rows]: row * n_vocab + token, distinct
    ggml_tensor * params     # input F32 [slots * rows, 3]: bias, repeat penalty, count x frequency + presence
    ggml_tensor * best       # I32 [rows]: each row's argmax after the adjustments
    bint fresh               # the next set_input fills every row first (a new graph or a new decode)
    int64_t staged_rows      # rows the identity staging below holds
    int32_t * ident_ids
    float * ident_params


ctypedef struct GreedySeq:   # a sequence's rows-greedy sampler state
    RowsGreedy * shared
    SamplerCore * core       # its current request's sampler, or NULL
    int64_t row              # its row in the graph last built (valid when set_input runs for it)


cdef class DeviceSampling:
    cdef Context ctx                 # (a closed one has freed its llama_context)
    cdef RowsTopK rows
    cdef RowsGreedy greedy_rows
    cdef GreedySeq * greedy_seqs
    cdef readonly int32_t k
    cdef readonly int32_t greedy_slots   # 0: no device greedy
    cdef int32_t n_seq
    cdef llama_sampler ** chains     # per sequence: its attached chain, or NULL (host sampling)
    cdef int8_t * modes              # per sequence: MODE_*
    cdef bint usable                 # libllama took the first chain (else: everything on the host)
    cdef readonly int64_t switches   # attach/detach calls since start (each makes libllama re-plan and re-reserve)
    cdef bint ensure(self, int32_t seq, bint on) noexcept nogil
    cdef bint use(self, int32_t seq, int mode) noexcept nogil
    cdef int wanted(self, SamplerCore * core, bint top_k_on) noexcept nogil
    cdef bint choose(self, int32_t seq, SamplerCore * core, bint top_k_on) noexcept nogil
    cdef inline void forget(self, int32_t seq) noexcept nogil:
        if 0 <= seq < self.n_seq:
            self.greedy_seqs[seq].core = NULL
    cdef inline void begin_decode(self) noexcept nogil:
        self.greedy_rows.fresh = True
