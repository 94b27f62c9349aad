# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A step's outputs, after the decode: each one's logits row (or its device top-k candidates,
or the token a device greedy chose) located, then every output sampled — on several threads
when there are enough of them — by its request's sampler (``sampling.sample_core`` /
``sample_candidates``; ``accept_device_token`` for a device token), GIL-free on the engine
thread. The ``Generator`` reads the tokens and n_probs results from here."""
from libc.stdint cimport int8_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from cython.parallel cimport prange

from third_party.ggml.llama cimport *
from llamacy.engine.context cimport Context
from llamacy.engine.device_sampling cimport MODE_GREEDY
from llamacy.engine.sampler_core cimport (sample_core, sample_candidates, accept_device_token, NO_LOGITS,
                                          NOTHING_ALLOWED)

cdef enum:
    PARALLEL_MIN = 4      # outputs in a step from which sampling runs on several threads
    # whole-row outputs per sampling thread at least: on a CPU the decode's threads are the
    # sampling's, and a thread more costs more than 16 argmaxes; with a GPU the host's threads
    # idle while it decodes
    THREAD_ROWS = 16
    GPU_THREAD_ROWS = 2

ROWS_PER_THREAD, GPU_ROWS_PER_THREAD = THREAD_ROWS, GPU_THREAD_ROWS


cdef class StepOutputs:
    """Room for up to ``n_seq`` outputs a step (one per sequence), with ``max_n_probs`` results each."""

    def __cinit__(self):
        self.tok = NULL
        self.core = NULL
        self.rows = NULL
        self.cand = NULL
        self.n_cand = NULL
        self.probs = NULL
        self.probs_buf = NULL
        self.n_probs = NULL

    def __init__(self, Context ctx, int32_t n_seq, int32_t max_n_probs, int32_t rows_per_thread=THREAD_ROWS):
        cdef int32_t i
        self.c_ctx = ctx.c_ctx
        self.n_seq = n_seq
        self.n_vocab = ctx.n_vocab
        self.max_n_probs = max(max_n_probs, 1)
        self.rows_per_thread = min(max(rows_per_thread, 1), THREAD_ROWS)
        self.tok = <llama_token *> malloc(n_seq * sizeof(llama_token))
        self.core = <SamplerCore **> calloc(n_seq, sizeof(void *))
        self.rows = <float **> calloc(n_seq, sizeof(void *))
        self.cand = <llama_token **> calloc(n_seq, sizeof(void *))
        self.n_cand = <int32_t *> calloc(n_seq, sizeof(int32_t))
        self.probs = <TokenProb **> malloc(n_seq * sizeof(void *))
        self.probs_buf = <TokenProb *> malloc(n_seq * self.max_n_probs * sizeof(TokenProb))
        self.n_probs = <int32_t *> calloc(n_seq, sizeof(int32_t))
        if (self.tok == NULL or self.core == NULL or self.rows == NULL or self.cand == NULL or self.n_cand == NULL
                or self.probs == NULL or self.probs_buf == NULL or self.n_probs == NULL):
            raise MemoryError()
        for i in range(n_seq):
            self.probs[i] = &self.probs_buf[i * self.max_n_probs]

    def __dealloc__(self):
        free(self.tok)
        free(self.core)
        free(self.rows)
        free(self.cand)
        free(self.n_cand)
        free(self.probs)
        free(self.probs_buf)
        free(self.n_probs)

    cdef int32_t resolve(self, int32_t start, int32_t m, int32_t n_out, const int32_t * out_idx,
                         const int32_t * out_seq, const int8_t * flags, GenSeq * seqs, DeviceSampling dev,
                         LoopCounters * tally) noexcept nogil:
        """Point each output of the piece [start, start + m) just decoded (``out_idx``: its
        batch index, ``flags``: the batch's output flags) at its logits row, its device
        candidates or its device token; returns how many. libllama keeps a decode's output rows
        in batch order, n_vocab apart — raw logits and backend-sampled ones alike — so the rows
        are found from one lookup of each kind (every per-row lookup waits for the device again)."""
        cdef int32_t k, j = start, n_pick = 0, ordinal = 0, n_found = 0
        cdef int64_t stride = self.n_vocab
        cdef float * raw = NULL
        cdef float * dev_logits = NULL
        cdef llama_token * dev_cand = NULL
        cdef llama_token * whole_ids
        cdef float * whole_logits
        cdef int whole
        self.n_rows = 0
        self.n_tokens = 0
        if dev is not None:
            dev.collect()
        for k in range(n_out):
            if not (start <= out_idx[k] < start + m):
                self.core[k] = NULL
                continue
            while j < out_idx[k]:   # outputs before this one in the piece
                if flags[j]:
                    ordinal += 1
                j += 1
            self.cand[k] = NULL
            self.rows[k] = NULL
            self.core[k] = seqs[out_seq[k]].core
            tally.outputs += 1
            n_pick += 1
            if dev is not None and dev.chains[out_seq[k]] != NULL:
                tally.device_outputs += 1
                whole = dev.whole_result(out_seq[k], &whole_ids, &whole_logits)
                if whole != 0:
                    if whole < 0:
                        continue        # (lost: sampled as NO_LOGITS)
                    tally.device_one_copy_outputs += 1
                    self.cand[k] = whole_ids
                    if whole_logits == NULL:                # a device greedy's token
                        tally.device_greedy_outputs += 1
                        self.n_tokens += 1
                    else:
                        self.rows[k] = whole_logits
                        self.n_cand[k] = dev.k
                    continue
                if dev_cand == NULL:
                    dev_cand = llama_get_sampled_candidates_ith(self.c_ctx, out_idx[k] - start)
                    if dev_cand == NULL:
                        continue
                    dev_cand -= ordinal * stride
                if dev.modes[out_seq[k]] == MODE_GREEDY:     # its token: cand[k][0], no logits
                    tally.device_greedy_outputs += 1
                    self.cand[k] = dev_cand + ordinal * stride
                    self.n_tokens += 1
                    continue
                if dev_logits == NULL:
                    dev_logits = llama_get_sampled_logits_ith(self.c_ctx, out_idx[k] - start)
                    n_found = llama_get_sampled_logits_count_ith(self.c_ctx, out_idx[k] - start)
                    if dev_logits == NULL:
                        continue
                    dev_logits -= ordinal * stride
                self.rows[k] = dev_logits + ordinal * stride
                self.cand[k] = dev_cand + ordinal * stride
                self.n_cand[k] = n_found
            else:
                if raw == NULL:
                    raw = llama_get_logits(self.c_ctx)
                    if raw == NULL:
                        continue
                self.rows[k] = raw + ordinal * stride
                self.n_rows += 1
        return n_pick

    cdef void sample(self, int32_t n_out, int32_t n_pick) noexcept nogil:
        """Sample the ``n_pick`` resolved ones of the step's ``n_out`` outputs."""
        cdef int32_t k, n_threads
        if n_pick - self.n_tokens >= PARALLEL_MIN:   # at most the decode's threads: one OpenMP pool
            n_threads = llama_n_threads(self.c_ctx)
            k = self._threads(n_pick - self.n_tokens)
            if n_threads > k:
                n_threads = k
            for k in prange(n_out, schedule="static", num_threads=n_threads):
                if self.core[k] != NULL:
                    self._sample_one(k)
        elif n_pick > 0:
            for k in range(n_out):
                if self.core[k] != NULL:
                    self._sample_one(k)

    cdef int32_t _threads(self, int32_t n_pick) noexcept nogil:
        """Threads for sampling ``n_pick`` outputs (device tokens, which only need accepting,
        not counted): an output sampled from its whole row (a scan
        of n_vocab logits) counts THREAD_ROWS / rows_per_thread times one sampled from its
        device candidates (128), and a thread takes THREAD_ROWS of those — so a GPU loop
        (rows_per_thread 2) spreads whole rows wide but keeps device-candidate outputs on few
        threads (measured on an H200: 128 of them on 16 threads took 4 ms, on 8 threads
        0.17 ms). At least 2."""
        cdef int32_t units, n
        units = (n_pick - self.n_rows) + self.n_rows * (THREAD_ROWS // self.rows_per_thread)
        n = (units + THREAD_ROWS - 1) // THREAD_ROWS
        return n if n > 2 else 2

    cdef void _sample_one(self, int32_t k) noexcept nogil:
        cdef llama_token tok
        if self.cand[k] != NULL and self.rows[k] == NULL:
            tok = accept_device_token(self.core[k], self.cand[k][0])
            self.n_probs[k] = 0
        elif self.cand[k] != NULL:
            tok = sample_candidates(self.core[k], self.cand[k], self.rows[k], self.n_cand[k])
            self.n_probs[k] = 0
        else:
            tok = sample_core(self.core[k], self.rows[k], self.probs[k], &self.n_probs[k])
        self.tok[k] = NOTHING_ALLOWED if tok == NO_LOGITS else tok
