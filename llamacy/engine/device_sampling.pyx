# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Top-k on the device: each step's k best candidates of every output row, selected inside the
decode graph, so that only k logits and token ids per output come back instead of the whole
vocabulary (49k floats), and the host samplers work on k candidates.

libllama's backend-sampling API (experimental) builds a sequence's sampler chain into the
decode graph and leaves the chain's candidates and their logits per output
(``llama_get_sampled_candidates_ith`` / ``llama_get_sampled_logits_ith``). Its own top_k
sampler adds a top-k over one row per sequence — for every sequence that has a chain, active
or not, each step — so with 128 slots the device runs 128 small sorts of the vocabulary. The
sampler here adds one top-k over all the rows of the step (the first sequence's chain builds
it, the others take views of their row), and a get_rows for the values.

What the host does with the k candidates (penalties, logit bias, the rest of the chain) is in
``sampling.sample_candidates``; which requests may use them (the adjustments before top_k only
lower logits, and top_k plus the tokens they touch stays within k) in ``Sampler.device_ok``.
A sequence whose request may not gets its chain detached (libllama then copies the raw logits
of that step's outputs); libllama re-plans its graph on every attach or detach, so a slot keeps
its mode until a request needs the other one.
"""
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport calloc, free

from third_party.ggml.ggml cimport (ggml_context, ggml_cgraph, ggml_tensor, ggml_top_k, ggml_get_rows,
                                    ggml_reshape_2d, ggml_reshape_3d, ggml_view_1d, ggml_set_name,
                                    ggml_is_contiguous, ggml_nelements)
from third_party.ggml.llama cimport *
from llamacy.engine.context cimport Context
from llamacy.engine.custom_samplers cimport sort_candidates


cdef const char * _name(const llama_sampler * smpl) noexcept nogil:
    return "llamacy-rows-top-k"


cdef void _apply(llama_sampler * smpl, llama_token_data_array * cur_p) noexcept nogil:
    """On the host (a chain applied to a candidate array): keep the k best, sorted."""
    cdef RowsTopK * rows = <RowsTopK *> smpl.ctx
    if cur_p.size == 0:
        return
    sort_candidates(cur_p)
    if cur_p.size > <size_t> rows.k:
        cur_p.size = rows.k
    if cur_p.selected >= 0 and <size_t> cur_p.selected >= cur_p.size:
        cur_p.selected = -1


cdef bint _backend_init(llama_sampler * smpl, ggml_backend_buffer_type_t buft,
                        uint32_t n_outputs_max_per_seq) noexcept nogil:
    return True     # top_k and get_rows: every backend libllama runs a model on has both


cdef void _backend_reset(llama_sampler * smpl) noexcept nogil:
    """A new graph is being built: the tensors of the last one are gone."""
    cdef RowsTopK * rows = <RowsTopK *> smpl.ctx
    rows.src = NULL
    rows.ids = NULL
    rows.vals = NULL


cdef void _backend_apply(llama_sampler * smpl, ggml_context * ctx, ggml_cgraph * gf,
                         llama_sampler_data * data) noexcept nogil:
    """``data.logits`` is one output row: a view of the step's (padded) logits matrix, or a
    lone row (libllama probing the sampler). The first row of a graph adds the top-k of the
    whole matrix; every row takes its own k ids and values from it."""
    cdef RowsTopK * rows = <RowsTopK *> smpl.ctx
    cdef ggml_tensor * row = data.logits
    cdef ggml_tensor * src = row.view_src
    cdef ggml_tensor * ids
    cdef int32_t k = rows.k
    cdef int64_t n_vocab = row.ne[0], r
    if k > n_vocab:
        k = <int32_t> n_vocab
    if (src == NULL or src.ne[0] != n_vocab or ggml_nelements(row) != n_vocab or not ggml_is_contiguous(src)
            or row.view_offs % src.nb[1] != 0):
        ids = ggml_top_k(ctx, row, k)
        data.candidates = ids
        data.logits = ggml_get_rows(ctx, ggml_reshape_2d(ctx, row, 1, n_vocab), ids)
        return
    if rows.src != src:
        rows.src = src
        rows.ids = ggml_set_name(ggml_top_k(ctx, src, k), "llamacy_top_k_ids")
        rows.vals = ggml_set_name(ggml_get_rows(ctx, ggml_reshape_3d(ctx, src, 1, n_vocab, src.ne[1]), rows.ids),
                                  "llamacy_top_k_logits")
    r = row.view_offs // src.nb[1]
    data.candidates = ggml_view_1d(ctx, rows.ids, k, r * rows.ids.nb[1])
    data.logits = ggml_view_1d(ctx, rows.vals, k, r * rows.vals.nb[2])


cdef llama_sampler_i rows_top_k_iface
rows_top_k_iface.name = _name
rows_top_k_iface.apply = _apply
rows_top_k_iface.backend_init = _backend_init
rows_top_k_iface.backend_apply = _backend_apply
rows_top_k_iface.backend_reset = _backend_reset


cdef class DeviceTopK:
    """The rows-top-k chains of one context's sequences (``attach``: attached from the start)."""

    def __cinit__(self):
        self.chains = NULL

    def __init__(self, Context ctx, int32_t n_seq, int32_t k, bint attach=True):
        if k < 1:
            raise ValueError("k must be at least 1")
        ctx._check()
        self.ctx = ctx
        self.k = min(k, ctx.n_vocab)
        self.rows.k = self.k
        self.n_seq = n_seq
        self.chains = <llama_sampler **> calloc(n_seq, sizeof(llama_sampler *))
        if self.chains == NULL:
            raise MemoryError()
        self.usable = True
        for s in range(n_seq if attach else min(n_seq, 1)):   # without: the first one, to learn if libllama takes them
            if not self.ensure(s, True):
                self.usable = False
                break
        if not attach:
            self.ensure(0, False)
        self.switches = 0

    def __dealloc__(self):
        cdef int32_t s
        cdef llama_context * c_ctx = NULL
        if self.chains == NULL:
            return
        if self.ctx is not None:
            c_ctx = self.ctx.c_ctx      # NULL once the context is closed
        for s in range(self.n_seq):
            if self.chains[s] != NULL:
                if c_ctx != NULL:
                    llama_set_sampler(c_ctx, s, NULL)
                llama_sampler_free(self.chains[s])
        free(self.chains)

    @property
    def available(self) -> bool:
        """Whether libllama accepted the chains (not, e.g., with tensor split mode)."""
        return self.usable

    def attached(self, int32_t seq) -> bool:
        if not 0 <= seq < self.n_seq:
            raise IndexError(f"sequence {seq} out of range [0, {self.n_seq})")
        return self.chains[seq] != NULL

    cdef bint ensure(self, int32_t seq, bint on) noexcept nogil:
        """Attach (``on``) or detach ``seq``'s chain unless it already is; returns whether the
        sequence's outputs come back as candidates. Only between decodes, on the thread that
        decodes: libllama re-plans its graph at the next llama_decode."""
        cdef llama_sampler * chain
        cdef llama_sampler_chain_params cp
        if seq < 0 or seq >= self.n_seq:
            return False
        if not on or not self.usable:
            if self.chains[seq] != NULL:
                llama_set_sampler(self.ctx.c_ctx, seq, NULL)
                llama_sampler_free(self.chains[seq])
                self.chains[seq] = NULL
                self.switches += 1
            return False
        if self.chains[seq] != NULL:
            return True
        cp = llama_sampler_chain_default_params()
        cp.no_perf = True
        chain = llama_sampler_chain_init(cp)      # a chain's backend part is set up once: a new one each time
        if chain == NULL:
            return False
        llama_sampler_chain_add(chain, llama_sampler_init(&rows_top_k_iface, &self.rows))
        if not llama_set_sampler(self.ctx.c_ctx, seq, chain):
            llama_sampler_free(chain)
            return False
        self.chains[seq] = chain
        self.switches += 1
        return True
