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
lower logits, and top_k plus the tokens they touch stays within k) in ``Sampler.device_need``.
A sequence whose request may not gets its chain detached (libllama then copies the raw logits
of that step's outputs); libllama re-plans its graph on every attach or detach, so a slot keeps
its mode until a request needs another one.

A greedy request needs less: its argmax after its logit bias and penalties, which touch a few
tokens (the bias list and the penalty window). The rows-greedy sampler copies the step's
logits, gathers each row's touched tokens (graph inputs set before the step: flat indices and
each token's bias, repeat penalty, count x frequency and presence penalty), adjusts them with
the host's own float operations in the host's order (``v + bias``, then ``v / repeat`` above
zero and ``v * repeat`` at or below, then ``- (count x frequency + presence)``, the sum made on
the host as the host path makes it), scatters them back and takes each row's argmax. (On CUDA,
built with fast math, the division may differ from the host's in the last bits: an exact tie
after the adjustments is the only case where the two could choose differently.) Only one token
id per output comes back; ``Sampler.device_entries`` says which requests it can serve (greedy,
no n_probs, at most ``greedy_slots`` touched tokens). Rows of other sequences, and the padding
of a row, adjust untouched tokens by nothing.

Each attach or detach also makes libllama reserve its buffers again (milliseconds; once per
decode however many switched): ``StepPlanner._choose_rows`` switches the idle sequences along.

libllama brings each output's sampler results back to the host with a copy of their own (two
per top-k output). When a graph holds every output of the decode (one micro-batch, as a step
under load is) and a kind's result matrix fits in a row (n_vocab values), the first sequence
with an output hands libllama the whole matrix and the others nothing (``OneCopy``): one copy
per kind and step. ``set_input`` records each output's row in the graph actually computed
(built now or reused), ``begin_decode`` which sequences have an output, and ``collect`` /
``whole_result`` read the step's results from the leader's row.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint32_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memset

from third_party.ggml.ggml cimport *
from third_party.ggml.llama cimport *
from llamacy.engine.context cimport Context
from llamacy.engine.custom_samplers cimport PenaltyState, sort_candidates
from llamacy.engine.sampler_core cimport SamplerCore

# planes of RowsGreedy.params
cdef enum:
    P_BIAS = 0
    P_REPEAT = 1
    P_SUB = 2       # the token's count in the window x the frequency penalty + the presence penalty
    N_PLANES = 3
    MAX_SLOTS = 256

MODE_NAMES = {MODE_HOST: "host", MODE_TOP_K: "top-k", MODE_GREEDY: "greedy"}


cdef const char * _name(const llama_sampler * smpl) noexcept nogil:
    return "llamacy-rows-top-k"


cdef void _apply(llama_sampler * smpl, llama_token_data_array * cur_p) noexcept nogil:
    """On the host (a chain applied to a candidate array): keep the k best, sorted."""
    cdef RowsTopK * rows = (<SeqChain *> smpl.ctx).top_k
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
    cdef RowsTopK * rows = (<SeqChain *> smpl.ctx).top_k
    rows.src = NULL
    rows.ids = NULL
    rows.vals = NULL


cdef inline void _one_copy(OneCopy * copy, const StepOutputsSeen * seen, ggml_tensor * src,
                          int64_t elements, int64_t n_vocab) noexcept nogil:
    """A new graph's first row: decides whether its kind's results go back in one copy — the graph
    holds every output of the decode (libllama decodes it in one micro-batch, as a step
    usually is) and the ``elements`` of the result matrix fit in the row libllama copies them
    to (n_vocab values)."""
    copy.n_rows = src.ne[1]
    copy.leader = -1
    copy.whole = copy.enabled and src.ne[1] - 1 == seen.n_outputs and elements <= n_vocab


cdef inline bint _leads(OneCopy * copy, const StepOutputsSeen * seen, int32_t seq) noexcept nogil:
    """In a one-copy graph: whether ``seq`` carries the matrix — the first sequence called with
    an output in the decode (libllama calls the others' chains too, on a stand-in row, and
    copies nothing of theirs)."""
    if copy.leader < 0 and seen.has_output[seq]:
        copy.leader = seq
        return True
    return False


cdef inline void _took_input(SeqChain * c, OneCopy * copy, const StepOutputsSeen * seen) noexcept nogil:
    """set_input, for an output of this decode: how its result comes back from the graph about
    to be computed (built now, or an earlier one reused)."""
    c.out_row = c.row
    c.out_gen = seen.gen
    copy.out_gen = seen.gen
    copy.out_whole = copy.whole
    copy.out_leader = copy.leader
    copy.out_n_rows = copy.n_rows


cdef void _backend_apply(llama_sampler * smpl, ggml_context * ctx, ggml_cgraph * gf,
                         llama_sampler_data * data) noexcept nogil:
    """``data.logits`` is one output row: a view of the step's (padded) logits matrix, or a
    lone row (libllama probing the sampler). The first row of a graph adds the top-k of the
    whole matrix; then either one row (the leader's) takes the whole matrix of ids and values
    and the others nothing (``OneCopy``), or every row takes its own k ids and values."""
    cdef SeqChain * c = <SeqChain *> smpl.ctx
    cdef RowsTopK * rows = c.top_k
    cdef ggml_tensor * row = data.logits
    cdef ggml_tensor * src = row.view_src
    cdef ggml_tensor * ids
    cdef int32_t k = rows.k
    cdef int64_t n_vocab = row.ne[0]
    if k > n_vocab:
        k = <int32_t> n_vocab
    if (src == NULL or src.ne[0] != n_vocab or ggml_nelements(row) != n_vocab or not ggml_is_contiguous(src)
            or row.view_offs % src.nb[1] != 0):
        c.row = -1
        ids = ggml_top_k(ctx, row, k)
        data.candidates = ids
        data.logits = ggml_get_rows(ctx, ggml_reshape_2d(ctx, row, 1, n_vocab), ids)
        return
    if rows.src != src:
        rows.src = src
        rows.ids = ggml_set_name(ggml_top_k(ctx, src, k), "llamacy_top_k_ids")
        rows.vals = ggml_set_name(ggml_get_rows(ctx, ggml_reshape_3d(ctx, src, 1, n_vocab, src.ne[1]), rows.ids),
                                  "llamacy_top_k_logits")
        _one_copy(&rows.copy, rows.seen, src, k * src.ne[1], n_vocab)
    c.row = row.view_offs // src.nb[1]
    if rows.copy.whole:
        if _leads(&rows.copy, rows.seen, c.seq):
            data.candidates = rows.ids
            data.logits = rows.vals
        else:
            data.candidates = NULL
            data.logits = NULL
        return
    data.candidates = ggml_view_1d(ctx, rows.ids, k, c.row * rows.ids.nb[1])
    data.logits = ggml_view_1d(ctx, rows.vals, k, c.row * rows.vals.nb[2])


cdef void _backend_set_input(llama_sampler * smpl) noexcept nogil:
    cdef SeqChain * c = <SeqChain *> smpl.ctx
    _took_input(c, &c.top_k.copy, c.top_k.seen)


cdef llama_sampler_i rows_top_k_iface
rows_top_k_iface.name = _name
rows_top_k_iface.apply = _apply
rows_top_k_iface.backend_init = _backend_init
rows_top_k_iface.backend_apply = _backend_apply
rows_top_k_iface.backend_set_input = _backend_set_input
rows_top_k_iface.backend_reset = _backend_reset


# --- rows-greedy ------------------------------------------------------------------------

cdef const char * _greedy_name(const llama_sampler * smpl) noexcept nogil:
    return "llamacy-rows-greedy"


cdef void _greedy_apply(llama_sampler * smpl, llama_token_data_array * cur_p) noexcept nogil:
    """On the host (a chain applied to a candidate array): the best candidate."""
    cdef size_t i, best = 0
    if cur_p.size == 0:
        return
    for i in range(1, cur_p.size):
        if cur_p.data[i].logit > cur_p.data[best].logit:
            best = i
    cur_p.selected = <int64_t> best


cdef void _greedy_backend_reset(llama_sampler * smpl) noexcept nogil:
    cdef RowsGreedy * g = (<SeqChain *> smpl.ctx).greedy
    g.src = NULL
    g.ids = NULL
    g.params = NULL
    g.best = NULL


cdef void _greedy_backend_apply(llama_sampler * smpl, ggml_context * ctx, ggml_cgraph * gf,
                                llama_sampler_data * data) noexcept nogil:
    """As the rows-top-k's: the first row of a graph adds the adjustment and the argmax of the
    whole logits matrix (see the module's docstring); then the leader's row takes every row's
    argmax and the others nothing (``OneCopy``), or every row takes its own. A lone row (no
    matrix) gets its plain argmax and no adjustments: libllama only builds those to probe a
    sampler."""
    cdef SeqChain * seq = <SeqChain *> smpl.ctx
    cdef RowsGreedy * g = seq.greedy
    cdef ggml_tensor * row = data.logits
    cdef ggml_tensor * src = row.view_src
    cdef ggml_tensor * flat
    cdef ggml_tensor * v
    cdef ggml_tensor * adjusted
    cdef ggml_tensor * rep
    cdef ggml_tensor * on_dev
    cdef int64_t n_vocab = row.ne[0], n
    if (src == NULL or src.ne[0] != n_vocab or ggml_nelements(row) != n_vocab or not ggml_is_contiguous(src)
            or row.view_offs % src.nb[1] != 0):
        seq.row = -1
        data.candidates = ggml_argmax(ctx, ggml_reshape_2d(ctx, row, n_vocab, 1))
        data.logits = NULL
        return
    if g.src != src:
        g.src = src
        g.n_rows = src.ne[1]
        n = g.slots * g.n_rows
        g.ids = ggml_set_name(ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n), "llamacy_greedy_ids")
        ggml_set_input(g.ids)
        g.params = ggml_set_name(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, N_PLANES), "llamacy_greedy_params")
        ggml_set_input(g.params)
        # the planes are views of a copy on the device: a view of the input itself would be
        # copied to the device on its own, as an intermediate result (waiting for the device)
        on_dev = ggml_cont(ctx, g.params)
        flat = ggml_reshape_2d(ctx, ggml_dup(ctx, src), 1, n_vocab * g.n_rows)
        v = ggml_reshape_1d(ctx, ggml_get_rows(ctx, flat, g.ids), n)
        v = ggml_add(ctx, v, ggml_view_1d(ctx, on_dev, n, P_BIAS * on_dev.nb[1]))
        rep = ggml_view_1d(ctx, on_dev, n, P_REPEAT * on_dev.nb[1])
        adjusted = ggml_sub(ctx, ggml_div(ctx, ggml_relu(ctx, v), rep),
                            ggml_mul(ctx, ggml_relu(ctx, ggml_neg(ctx, v)), rep))
        adjusted = ggml_sub(ctx, adjusted, ggml_view_1d(ctx, on_dev, n, P_SUB * on_dev.nb[1]))
        flat = ggml_set_rows(ctx, flat, ggml_reshape_2d(ctx, adjusted, 1, n), g.ids)
        g.best = ggml_set_name(ggml_argmax(ctx, ggml_reshape_2d(ctx, flat, n_vocab, g.n_rows)), "llamacy_greedy_best")
        g.fresh = True
        _one_copy(&g.copy, g.seen, src, g.n_rows, n_vocab)
    seq.row = row.view_offs // src.nb[1]
    data.logits = NULL          # (else libllama copies the row back as the chain's logits)
    if not g.copy.whole:
        data.candidates = ggml_view_1d(ctx, g.best, 1, seq.row * g.best.nb[0])
    elif _leads(&g.copy, g.seen, seq.seq):
        data.candidates = g.best
    else:
        data.candidates = NULL


cdef bint _stage_identity(RowsGreedy * g) noexcept nogil:
    """Every row adjusting its first ``slots`` tokens by nothing, for ``g.n_rows`` rows."""
    cdef int64_t r, j, n = g.slots * g.n_rows
    cdef int32_t * ids
    cdef float * params
    if g.staged_rows != g.n_rows:     # (laid out for its row count: the planes are n apart)
        ids = <int32_t *> realloc(g.ident_ids, n * sizeof(int32_t))
        if ids == NULL:
            return False
        g.ident_ids = ids
        params = <float *> realloc(g.ident_params, n * N_PLANES * sizeof(float))
        if params == NULL:
            return False
        g.ident_params = params
        for r in range(g.n_rows):
            for j in range(g.slots):
                g.ident_ids[r * g.slots + j] = <int32_t> (r * g.n_vocab + j)
        for j in range(n):
            g.ident_params[P_BIAS * n + j] = 0.0
            g.ident_params[P_REPEAT * n + j] = 1.0
            g.ident_params[P_SUB * n + j] = 0.0
        g.staged_rows = g.n_rows
    return True


cdef void _greedy_backend_set_input(llama_sampler * smpl) noexcept nogil:
    """Before the step: this sequence's row adjusts its request's biased tokens and penalty
    window (each distinct token once; the rest of its slots untouched tokens, adjusted by
    nothing); the first call of a graph or a decode also fills every row with no adjustments."""
    cdef SeqChain * seq = <SeqChain *> smpl.ctx
    cdef RowsGreedy * g = seq.greedy
    cdef SamplerCore * c = seq.core
    cdef PenaltyState * pen = NULL
    cdef int64_t n = g.slots * g.n_rows, base
    cdef int32_t m = 0, j, b, t
    cdef uint32_t done = 0, biased = 0
    cdef llama_token tok
    cdef bint touched
    cdef int32_t ids[MAX_SLOTS]
    cdef float params[N_PLANES][MAX_SLOTS]
    _took_input(seq, &g.copy, g.seen)
    if g.ids == NULL or g.params == NULL:
        return
    if g.fresh:
        if not _stage_identity(g):
            return
        ggml_backend_tensor_set(g.ids, g.ident_ids, 0, n * sizeof(int32_t))
        ggml_backend_tensor_set(g.params, g.ident_params, 0, n * N_PLANES * sizeof(float))
        g.fresh = False
    if seq.row < 0 or seq.row >= g.n_rows or c == NULL:
        return
    if c.pen != NULL:
        # the penalty state's stamps mark this call's tokens: ``done`` penalised, ``biased``
        # biased only so far; the state's round ends at the larger (penalty_apply_row's next
        # round is then above every stamp)
        pen = c.pen
        if pen.round > <uint32_t> 4294967280:
            for t in range(pen.n_vocab):
                pen.stamp[t] = 0
            pen.round = 0
        done = pen.round + 1
        biased = pen.round + 2
        pen.round = biased
    for b in range(c.n_bias):
        if m == g.slots:
            break
        ids[m] = c.bias[b].token
        params[P_BIAS][m] = c.bias[b].bias
        params[P_REPEAT][m] = 1.0
        params[P_SUB][m] = 0.0
        if pen != NULL:
            pen.stamp[ids[m]] = biased
        m += 1
    if pen != NULL:
        for j in range(pen.ring_size):
            tok = pen.ring[j]
            if pen.stamp[tok] == done or (not pen.penalize_nl and tok == pen.nl):
                continue
            if pen.stamp[tok] == biased:
                for b in range(m):
                    if ids[b] == tok:
                        break
            elif m < g.slots:
                b = m
                ids[m] = tok
                params[P_BIAS][m] = 0.0
                m += 1
            else:
                continue        # more touched tokens than slots: Sampler.device_entries rules that out
            pen.stamp[tok] = done
            params[P_REPEAT][b] = pen.repeat
            params[P_SUB][b] = pen.counts[tok] * pen.freq + pen.present     # as penalize() makes it
    t = 0
    for j in range(m, g.slots):                    # untouched tokens, distinct
        while True:
            if pen != NULL:
                touched = pen.stamp[t] == done or pen.stamp[t] == biased
            else:
                touched = False
                for b in range(m):
                    if ids[b] == t:
                        touched = True
                        break
            if not touched:
                break
            t += 1
        ids[j] = t
        params[P_BIAS][j] = 0.0
        params[P_REPEAT][j] = 1.0
        params[P_SUB][j] = 0.0
        t += 1
    base = seq.row * g.slots
    for j in range(g.slots):
        ids[j] = <int32_t> (seq.row * g.n_vocab + ids[j])
    ggml_backend_tensor_set(g.ids, ids, base * sizeof(int32_t), g.slots * sizeof(int32_t))
    for b in range(N_PLANES):
        ggml_backend_tensor_set(g.params, &params[b][0], (b * n + base) * sizeof(float), g.slots * sizeof(float))


cdef llama_sampler_i rows_greedy_iface
rows_greedy_iface.name = _greedy_name
rows_greedy_iface.apply = _greedy_apply
rows_greedy_iface.backend_init = _backend_init
rows_greedy_iface.backend_apply = _greedy_backend_apply
rows_greedy_iface.backend_set_input = _greedy_backend_set_input
rows_greedy_iface.backend_reset = _greedy_backend_reset


cdef class DeviceSampling:
    """The device-sampling chains of one context's sequences: rows-top-k (``attach``: attached
    from the start) and, with ``greedy_slots`` > 0, rows-greedy for the requests it can serve
    (each sequence one chain at a time: ``mode``); ``one_copy``: each kind's results of a step
    come back in one copy where they can (else one per output)."""

    def __cinit__(self):
        self.chains = NULL
        self.modes = NULL
        self.seq_chains = NULL
        self.seen.has_output = NULL
        self.seen.at = NULL
        self.greedy_rows.ident_ids = NULL
        self.greedy_rows.ident_params = NULL

    def __init__(self, Context ctx, int32_t n_seq, int32_t k, bint attach=True, int32_t greedy_slots=0,
                 bint one_copy=True):
        if k < 1:
            raise ValueError("k must be at least 1")
        if not 0 <= greedy_slots <= MAX_SLOTS:
            raise ValueError(f"greedy_slots must be in [0, {MAX_SLOTS}]")
        ctx._check()
        self.ctx = ctx
        self.k = min(k, ctx.n_vocab)
        self.rows.k = self.k
        self.rows.seen = &self.seen
        self.greedy_slots = greedy_slots
        self.greedy_rows.slots = greedy_slots
        self.greedy_rows.n_vocab = ctx.n_vocab
        self.greedy_rows.seen = &self.seen
        self.n_seq = n_seq
        self.chains = <llama_sampler **> calloc(n_seq, sizeof(llama_sampler *))
        self.modes = <int8_t *> calloc(n_seq, sizeof(int8_t))
        self.seq_chains = <SeqChain *> calloc(n_seq, sizeof(SeqChain))
        self.seen.has_output = <int8_t *> calloc(n_seq, sizeof(int8_t))
        self.seen.at = <int32_t *> calloc(n_seq, sizeof(int32_t))
        if (self.chains == NULL or self.modes == NULL or self.seq_chains == NULL or self.seen.has_output == NULL
                or self.seen.at == NULL):
            raise MemoryError()
        for s in range(n_seq):
            self.seq_chains[s].top_k = &self.rows
            self.seq_chains[s].greedy = &self.greedy_rows
            self.seq_chains[s].seq = s
            self.seq_chains[s].row = -1
            self.seq_chains[s].out_gen = -1
        self.rows.copy.out_gen = -1
        self.greedy_rows.copy.out_gen = -1
        self.rows.copy.enabled = one_copy
        self.greedy_rows.copy.enabled = one_copy
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
        if self.chains != NULL:
            if self.ctx is not None:
                c_ctx = self.ctx.c_ctx      # NULL once the context is closed
            for s in range(self.n_seq):
                if self.chains[s] != NULL:
                    if c_ctx != NULL:
                        llama_set_sampler(c_ctx, s, NULL)
                    llama_sampler_free(self.chains[s])
            free(self.chains)
        free(self.modes)
        free(self.seq_chains)
        free(self.seen.has_output)
        free(self.seen.at)
        free(self.greedy_rows.ident_ids)
        free(self.greedy_rows.ident_params)

    @property
    def available(self) -> bool:
        """Whether libllama accepted the chains (not, e.g., with tensor split mode)."""
        return self.usable

    def attached(self, int32_t seq) -> bool:
        return self.mode_of(seq) != "host"

    def mode_of(self, int32_t seq) -> str:
        """How ``seq``'s outputs come back: "host" (whole rows), "top-k" or "greedy"."""
        if not 0 <= seq < self.n_seq:
            raise IndexError(f"sequence {seq} out of range [0, {self.n_seq})")
        return MODE_NAMES[self.modes[seq]]

    def set_mode(self, int32_t seq, str mode) -> bool:
        """Attach ``seq``'s chain for ``mode`` ("host": none); whether it is attached."""
        cdef int m = {v: k for k, v in MODE_NAMES.items()}[mode]
        if not 0 <= seq < self.n_seq:
            raise IndexError(f"sequence {seq} out of range [0, {self.n_seq})")
        return self.use(seq, m)

    cdef bint ensure(self, int32_t seq, bint on) noexcept nogil:
        """Attach (``on``) or detach ``seq``'s rows-top-k chain; returns whether the sequence's
        outputs come back as top-k candidates."""
        return self.use(seq, MODE_TOP_K if on else MODE_HOST)

    cdef int wanted(self, SamplerCore * core, bint top_k_on) noexcept nogil:
        """The mode for the request ``core``: rows-greedy if it can serve it, else rows-top-k
        if on (``top_k_on``) and the request can use its k candidates, else the whole row."""
        if core != NULL and self.greedy_slots > 0 and 0 <= core.device_entries <= self.greedy_slots:
            return MODE_GREEDY
        if top_k_on and core != NULL and 0 <= core.device_need <= self.k:
            return MODE_TOP_K
        return MODE_HOST

    cdef bint choose(self, int32_t seq, SamplerCore * core, bint top_k_on) noexcept nogil:
        """Before a step with an output of ``seq`` for the request ``core``: its chain for
        ``wanted``; returns whether one is attached."""
        if 0 <= seq < self.n_seq:
            self.seq_chains[seq].core = core
        return self.use(seq, self.wanted(core, top_k_on))

    cdef bint use(self, int32_t seq, int mode) noexcept nogil:
        """Attach ``seq``'s chain for ``mode`` unless it already is (MODE_HOST: detach it);
        returns whether a chain is attached. Only between decodes, on the thread that decodes:
        libllama re-plans its graph at the next llama_decode."""
        cdef llama_sampler * chain
        cdef llama_sampler * member
        cdef llama_sampler_chain_params cp
        if seq < 0 or seq >= self.n_seq:
            return False
        if mode == MODE_GREEDY and self.greedy_slots == 0:
            mode = MODE_HOST
        if not self.usable:
            mode = MODE_HOST
        if self.modes[seq] == mode:
            return mode != MODE_HOST
        if self.chains[seq] != NULL:
            llama_set_sampler(self.ctx.c_ctx, seq, NULL)
            llama_sampler_free(self.chains[seq])
            self.chains[seq] = NULL
            self.modes[seq] = MODE_HOST
            self.switches += 1
        if mode == MODE_HOST:
            return False
        cp = llama_sampler_chain_default_params()
        cp.no_perf = True
        chain = llama_sampler_chain_init(cp)      # a chain's backend part is set up once: a new one each time
        if chain == NULL:
            return False
        if mode == MODE_GREEDY:
            member = llama_sampler_init(&rows_greedy_iface, &self.seq_chains[seq])
        else:
            member = llama_sampler_init(&rows_top_k_iface, &self.seq_chains[seq])
        llama_sampler_chain_add(chain, member)
        if not llama_set_sampler(self.ctx.c_ctx, seq, chain):
            llama_sampler_free(chain)
            return False
        self.chains[seq] = chain
        self.modes[seq] = mode
        self.switches += 1
        return True

    cdef void begin_decode(self, const llama_batch * batch) noexcept nogil:
        """Before each llama_decode of ``batch``: which sequences have an output in it (the
        one-copy graphs choose their leader among them, ``collect`` finds its row by it)."""
        cdef int32_t i, s
        cdef StepOutputsSeen * seen = &self.seen
        self.greedy_rows.fresh = True
        seen.gen += 1
        seen.n_outputs = 0
        memset(seen.has_output, 0, self.n_seq * sizeof(int8_t))
        for i in range(batch.n_tokens):
            if batch.logits != NULL:
                if not batch.logits[i]:
                    continue
            elif i != batch.n_tokens - 1:       # (no flags: the last token's only)
                continue
            seen.n_outputs += 1
            s = batch.seq_id[i][0] if batch.seq_id != NULL else 0
            if 0 <= s < self.n_seq:
                seen.has_output[s] = 1
                seen.at[s] = i

    cdef void collect(self) noexcept nogil:
        """After the decode begun last: where each kind's one copy landed (the leader's row of
        libllama's sampled candidates or logits), checked against the matrix's size; NULL for a
        kind whose results came back per output (or not at all)."""
        self.top_k_ids = NULL
        self.top_k_logits = NULL
        self.greedy_best = NULL
        cdef llama_context * c_ctx = self.ctx.c_ctx
        cdef int64_t n = self.k * self.rows.copy.out_n_rows
        cdef int32_t idx = self._leader_at(&self.rows.copy)
        if (idx >= 0 and llama_get_sampled_candidates_count_ith(c_ctx, idx) == n
                and llama_get_sampled_logits_count_ith(c_ctx, idx) == n):
            self.top_k_ids = llama_get_sampled_candidates_ith(c_ctx, idx)
            self.top_k_logits = llama_get_sampled_logits_ith(c_ctx, idx)
        idx = self._leader_at(&self.greedy_rows.copy)
        if idx >= 0 and llama_get_sampled_candidates_count_ith(c_ctx, idx) == self.greedy_rows.copy.out_n_rows:
            self.greedy_best = llama_get_sampled_candidates_ith(c_ctx, idx)

    cdef inline int32_t _leader_at(self, const OneCopy * copy) noexcept nogil:
        """The batch index of the output whose row carries a kind's one copy in the decode begun
        last, or -1 when that kind came back per output (or not at all)."""
        if copy.out_gen == self.seen.gen and copy.out_whole and copy.out_leader >= 0:
            return self.seen.at[copy.out_leader]
        return -1
