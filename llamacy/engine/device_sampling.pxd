from libc.stdint cimport int8_t, int32_t, int64_t
from third_party.ggml.llama cimport llama_batch, llama_context, llama_sampler, llama_token
from third_party.ggml.ggml cimport ggml_tensor
from llamacy.engine.context cimport Context
from llamacy.engine.sampler_core cimport SamplerCore


cdef enum:
    # how a sequence's outputs come back (DeviceSampling.modes)
    MODE_HOST = 0       # its whole logits row (no chain)
    MODE_TOP_K = 1      # its k best candidates and their logits (the rows-top-k chain)
    MODE_GREEDY = 2     # its argmax after its request's logit bias and penalties (the rows-greedy chain)


ctypedef struct StepOutputsSeen:  # the decode about to run (begin_decode): its outputs
    int64_t gen              # decodes begun so far (this one's number)
    int64_t n_outputs        # output tokens in its batch
    int8_t * has_output      # per sequence: whether it has one (at most one each)
    int32_t * at             # per sequence: that output's batch index


ctypedef struct OneCopy:     # a chain kind's results brought back in one copy for the whole step
    # (its result matrix, on the row of one output, the leader's) when the graph holds every
    # output of the decode and the matrix fits in a row; else a copy per output (a view each)
    bint enabled             # (DeviceSampling's one_copy)
    bint whole               # the graph last built: one copy
    int32_t leader           # ... on this sequence's row (-1: none of its sequences has an output)
    int64_t n_rows           # ... of this many rows (the graph's outputs + libllama's padding row)
    # the same, as they were for the graph last computed (set_input; out_gen: in that decode)
    int64_t out_gen
    bint out_whole
    int32_t out_leader
    int64_t out_n_rows


ctypedef struct RowsTopK:
    int32_t k
    StepOutputsSeen * seen
    OneCopy copy
    ggml_tensor * src        # the padded logits of the graph being built (NULL: not seen yet)
    ggml_tensor * ids        # [k, rows]: each row's k best token ids, in no order
    ggml_tensor * vals       # [1, k, rows]: their logits


ctypedef struct RowsGreedy:
    int32_t slots            # adjusted tokens per row (a request's bias + penalty window, then untouched ones)
    int32_t n_vocab
    StepOutputsSeen * seen
    OneCopy copy
    ggml_tensor * src        # as RowsTopK's
    int64_t n_rows           # src's rows (the step's outputs + libllama's padding row)
    ggml_tensor * ids        # input I32 [slots * rows]: row * n_vocab + token, distinct
    ggml_tensor * params     # input F32 [slots * rows, 3]: bias, repeat penalty, count x frequency + presence
    ggml_tensor * best       # I32 [rows]: each row's argmax after the adjustments
    bint fresh               # the next set_input fills every row first (a new graph or a new decode)
    int64_t staged_rows      # rows the identity staging below holds
    int32_t * ident_ids
    float * ident_params


ctypedef struct SeqChain:    # a sequence's state for its chain's member (rows-top-k or rows-greedy)
    RowsTopK * top_k
    RowsGreedy * greedy
    SamplerCore * core       # its current request's sampler, or NULL
    int32_t seq
    int64_t row              # its row in the graph last built
    int64_t out_row          # its row in the graph computed in decode out_gen (set_input)
    int64_t out_gen


cdef class DeviceSampling:
    cdef Context ctx                 # (a closed one has freed its llama_context)
    cdef RowsTopK rows
    cdef RowsGreedy greedy_rows
    cdef SeqChain * seq_chains       # per sequence: its chain member's state
    cdef StepOutputsSeen seen
    # after a decode (collect): each kind's result matrix when it came back in one copy, else NULL
    cdef llama_token * top_k_ids     # [rows, k]
    cdef float * top_k_logits        # [rows, k]
    cdef llama_token * greedy_best   # [rows]
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
    cdef void begin_decode(self, const llama_batch * batch) noexcept nogil
    cdef void collect(self) noexcept nogil
    cdef int32_t _leader_at(self, const OneCopy * copy) noexcept nogil
    cdef inline void forget(self, int32_t seq) noexcept nogil:
        if 0 <= seq < self.n_seq:
            self.seq_chains[seq].core = NULL
    cdef inline int whole_result(self, int32_t seq, llama_token ** ids, float ** logits) noexcept nogil:
        """After ``collect``, for an output of ``seq`` in the decode: 1 with its k candidate
        ids and their logits (``ids``, ``logits``) or its device greedy's token (``ids``,
        ``logits`` NULL) from its kind's one copy; 0 when its kind came back per output;
        -1 when the one copy did not arrive (never expected: the output is lost)."""
        cdef SeqChain * c = &self.seq_chains[seq]
        cdef OneCopy * copy = &self.greedy_rows.copy if self.modes[seq] == MODE_GREEDY else &self.rows.copy
        if c.out_gen != self.seen.gen or copy.out_gen != self.seen.gen or not copy.out_whole:
            return 0
        if not 0 <= c.out_row < copy.out_n_rows:
            return -1
        if self.modes[seq] == MODE_GREEDY:
            ids[0] = self.greedy_best + c.out_row if self.greedy_best != NULL else NULL
            logits[0] = NULL
        else:
            ids[0] = self.top_k_ids + c.out_row * self.k if self.top_k_ids != NULL else NULL
            logits[0] = self.top_k_logits + c.out_row * self.k if self.top_k_logits != NULL else NULL
            if logits[0] == NULL:
                return -1
        return 1 if ids[0] != NULL else -1
