# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What each step of the generation loop decodes, decided in C on the engine thread: a token
for every generating sequence (shifting a full context first, or applying self-extend), then
prompt chunks first come first served up to n_batch, written into the batch in sequence order.

With a KV stream per sequence libllama decodes a batch as one micro-batch per run of
consecutive sequence ids, so idle sequences between busy ones cost a pass over the weights
each. With ``pad_gaps`` (a GPU, where a token costs far less than a pass) each such idle
sequence gets one throw-away token at its next position, removed after the decode; and from a
step with ``stable_on_at`` outputs (or that many on average, the step at least
``stable_off_at``) until a step has fewer than ``stable_off_at`` or the loop goes idle, the
batch keeps its shape from step to step, so that libllama reuses its
decode graph (a rebuild costs ~10 ms of host time on a GPU): every sequence of [0, a multiple of SHAPE_BUCKET) gets a token —
idle ones a throw-away one — every token is an output, and a prompt remainder of up to
``stream_max`` tokens goes in a token a step instead of a second micro-batch.

The planner also decides which outputs are sampled on the device (``DeviceSampling``): a sequence
whose greedy request a device greedy can serve gets that chain; one whose request can be
sampled from its top-k candidates the top-k chain — in ``dev_auto`` mode only while the steps
average ``dev_on_at`` outputs or more (every sequence switched at once: each switch makes
libllama re-plan its graph); the others none.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, calloc, free

from third_party.ggml.llama cimport *
from llamacy.engine.context cimport Context, Batch
from llamacy.engine.device_sampling cimport DeviceSampling, MODE_HOST, MODE_TOP_K
from llamacy.engine.loop_types cimport *
from llamacy.engine.sampler_core cimport SamplerCore

cdef enum:
    SHAPE_BUCKET = 16     # stable shape: the batch covers sequences [0, a multiple of this)


cdef class StepPlanner:
    """The step plan of one Generator (which binds its sequences and counters to it)."""

    def __cinit__(self):
        self.seqs = NULL
        self.tally = NULL
        self.plan_kind = NULL
        self.plan_pos = NULL
        self.plan_start = NULL
        self.plan_n = NULL
        self.plan_out = NULL
        self.in_step = NULL
        self.out_seq = NULL
        self.out_idx = NULL
        self.out_decoded = NULL
        self.pad_seq = NULL
        self.pad_pos = NULL

    def __init__(self, Context ctx, Batch batch, int32_t n_seq, int32_t n_batch, *, int32_t ga_n, int32_t ga_w,
                 bint pad_gaps, double stable_on_at, double stable_off_at, int32_t stream_max, DeviceSampling device,
                 bint device_auto, double device_on_at, double device_off_at):
        ctx._check()
        self.batch = batch
        self.c_mem = llama_get_memory(ctx.c_ctx)
        self.n_seq = n_seq
        self.n_batch = n_batch
        self.n_ctx_seq = ctx.n_ctx_seq
        self.ga_n, self.ga_w = ga_n, ga_w
        self.plan_kind = <int32_t *> calloc(n_seq, sizeof(int32_t))
        self.plan_pos = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.plan_start = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.plan_n = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.plan_out = <uint8_t *> calloc(n_seq, 1)
        self.in_step = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.out_seq = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.out_idx = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.out_decoded = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.pad_seq = <int32_t *> malloc(n_seq * sizeof(int32_t))
        self.pad_pos = <int32_t *> malloc(n_seq * sizeof(int32_t))
        if (self.plan_kind == NULL or self.plan_pos == NULL or self.plan_start == NULL or self.plan_n == NULL
                or self.plan_out == NULL or self.in_step == NULL or self.out_seq == NULL or self.out_idx == NULL
                or self.out_decoded == NULL or self.pad_seq == NULL or self.pad_pos == NULL):
            raise MemoryError()
        self.pad_gaps = pad_gaps and ga_n == 1
        self.stable = False
        self.stable_on_at, self.stable_off_at = stable_on_at, stable_off_at
        self.stream_max = stream_max
        self.load = 0.0
        self.dev = device
        self.dev_auto = device_auto and device is not None
        self.dev_on = device is not None and not device_auto
        self.dev_on_at, self.dev_off_at = device_on_at, device_off_at
        if self.dev_auto:
            for s in range(n_seq):
                self.dev.ensure(s, False)     # off until the load asks for it

    def __dealloc__(self):
        free(self.plan_kind)
        free(self.plan_pos)
        free(self.plan_start)
        free(self.plan_n)
        free(self.plan_out)
        free(self.in_step)
        free(self.out_seq)
        free(self.out_idx)
        free(self.out_decoded)
        free(self.pad_seq)
        free(self.pad_pos)

    cdef void bind(self, GenSeq * seqs, LoopCounters * tally) noexcept:
        self.seqs = seqs
        self.tally = tally

    cdef int32_t plan(self, StepRecord * rec) noexcept nogil:
        """Decide the step: which sequences get a token, which prompt chunks go in (entries for
        shifts, prefills and sequences that end here go into ``rec``); returns the tokens
        planned (0: nothing to do). ``write_batch`` then writes them."""
        cdef int32_t s, pos, n, start, budget, k, n_discard, n_planned = 0
        cdef bint streamed
        cdef GenSeq * q
        cdef GenSeq * best
        cdef int64_t best_order
        self.n_out = 0
        self.n_in_step = 0
        self.n_pad = 0
        for s in range(self.n_seq):
            self.plan_kind[s] = P_NONE
        # 1. one token for every generating sequence
        for s in range(self.n_seq):
            q = &self.seqs[s]
            if llamacy_load(&q.state) != SEQ_ACTIVE:
                continue
            if llamacy_load(&q.cancelled):
                end_seq(rec, self.seqs, s, F_CANCELLED, -1)
                continue
            if q.n_past + 1 > q.n_ctx:
                if self.ga_n > 1:      # self-extend keeps every token: the context is simply full
                    end_seq(rec, self.seqs, s, F_CONTEXT, -1)
                    continue
                n_discard = (q.n_past - q.n_keep) // 2
                if n_discard < 1:
                    n_discard = 1
                llama_memory_seq_rm(self.c_mem, s, q.n_keep, q.n_keep + n_discard)
                llama_memory_seq_add(self.c_mem, s, q.n_keep + n_discard, q.n_past, -n_discard)
                q.n_past -= n_discard
                add_entry(rec, self.seqs, E_SHIFT, s, n_discard, -1, 0)
            if self.ga_n > 1:
                pos = self._self_extend(q, s)
                q.n_past_se += 1
            else:
                pos = q.n_past
            self.plan_kind[s] = P_TOKEN
            self.plan_pos[s] = pos
            n_planned += 1
            self.in_step[self.n_in_step] = s
            self.n_in_step += 1
        # 2. prompt chunks, first come first served, up to n_batch tokens in all
        budget = self.n_batch - n_planned
        while budget > 0:
            best = NULL
            for s in range(self.n_seq):
                q = &self.seqs[s]
                if (llamacy_load(&q.state) == SEQ_PREFILL and self.plan_kind[s] == P_NONE
                        and (best == NULL or q.order < best_order)):
                    best, best_order, k = q, q.order, s
            if best == NULL:
                break
            q, s = best, k
            if llamacy_load(&q.cancelled):
                end_seq(rec, self.seqs, s, F_CANCELLED, -1)
                continue
            if q.trim_from >= 0:       # added while the loop ran: the KV tail goes here, on this thread
                llama_memory_seq_rm(self.c_mem, s, q.trim_from, -1)
                q.trim_from = -1
            start = q.n_prompt_done
            n = q.n_prompt - start
            streamed = self.stable and n <= self.stream_max and self.ga_n == 1
            if streamed:               # a token a step: the batch keeps its shape
                n = 1
            if n > budget:
                n = budget
            pos = start
            if self.ga_n > 1:          # self-extend: never cross a window edge inside one batch
                pos = self._self_extend(q, s)
                if n > q.ga_i + self.ga_w - pos:
                    n = q.ga_i + self.ga_w - pos
                q.n_past_se += n
            self.plan_kind[s] = P_CHUNK
            self.plan_pos[s] = pos
            self.plan_start[s] = start
            self.plan_n[s] = n
            self.plan_out[s] = q.want_sample and start + n == q.n_prompt
            n_planned += n
            self.in_step[self.n_in_step] = s
            self.n_in_step += 1
            add_entry(rec, self.seqs, E_PREFILL, s, n, -1, 0)
            q.n_prompt_done += n
            q.n_past += n
            budget -= n
            rec.n_prompt += n
            if q.n_prompt_done == q.n_prompt:
                if q.want_sample:
                    llamacy_store(&q.state, SEQ_ACTIVE)   # its first token is sampled after the decode
                else:
                    end_seq(rec, self.seqs, s, F_PROMPT_ONLY, -1)
            elif not streamed:
                break                  # the batch is full
        if n_planned > 0:
            self._track_load()
            if self.dev_auto:
                self._device_policy()
        else:                          # idle: the next request's first step decides afresh
            self.stable = False
        return n_planned

    cdef void write_batch(self, bint pad, int32_t n_planned) noexcept nogil:
        """The step's plan into the batch, sequence by sequence, and its outputs (``pad``: with
        a throw-away token for each idle sequence between the first and the last planned one
        that has room for it, while the batch stays within n_batch; in a stable step, for each
        sequence without a token in [0, a multiple of SHAPE_BUCKET), every token an output)."""
        cdef int32_t s, k, first = -1, last = -1, p
        cdef int st
        cdef GenSeq * q
        cdef bint stable = pad and self.stable
        self.batch.c_batch.n_tokens = 0
        self.n_out = 0
        self.n_pad = 0
        for s in range(self.n_seq):
            if self.plan_kind[s] != P_NONE:
                if first < 0:
                    first = s
                last = s
        if stable:
            first = -1
            last = (last // SHAPE_BUCKET + 1) * SHAPE_BUCKET
            if last > self.n_seq:
                last = self.n_seq
        for s in range(self.n_seq):
            q = &self.seqs[s]
            if self.plan_kind[s] == P_TOKEN:
                self._choose_rows(s)
                self.out_seq[self.n_out] = s
                self.out_idx[self.n_out] = self.batch.c_batch.n_tokens
                self.out_decoded[self.n_out] = q.token
                self.n_out += 1
                self._add_token(q.token, self.plan_pos[s], s, True)
            elif self.plan_kind[s] == P_CHUNK:
                for k in range(self.plan_n[s]):
                    self._add_token(q.prompt[self.plan_start[s] + k], self.plan_pos[s] + k, s,
                                    (self.plan_out[s] and k == self.plan_n[s] - 1) or (stable and self.plan_n[s] == 1))
                if not self.plan_out[s] and stable and self.plan_n[s] == 1:
                    self._no_request(s)
                if self.plan_out[s]:
                    self._choose_rows(s)
                    self.out_seq[self.n_out] = s
                    self.out_idx[self.n_out] = self.batch.c_batch.n_tokens - 1
                    self.out_decoded[self.n_out] = -1
                    self.n_out += 1
            elif pad and first < s < last and n_planned + self.n_pad < self.n_batch:
                st = llamacy_load(&q.state)
                if st != SEQ_FREE and st != SEQ_DONE and not (stable and st == SEQ_PREFILL):
                    continue
                p = llama_memory_seq_pos_max(self.c_mem, s) + 1
                if p >= self.n_ctx_seq:
                    continue
                self.pad_seq[self.n_pad] = s
                self.pad_pos[self.n_pad] = p
                self.n_pad += 1
                if stable:
                    self._no_request(s)
                self._add_token(0, p, s, stable)
        self.tally.pad_tokens += self.n_pad

    def warm_up_shapes(self) -> list:
        """The batch sizes a GPU loop's steps take: each up to SHAPE_BUCKET (a few outputs a
        step, no padding), then its multiples (the stable shape) up to the sequences — within
        the batch's room."""
        cdef int32_t top = min(self.n_seq, self.n_batch)
        sizes = list(range(1, min(SHAPE_BUCKET, top) + 1)) + list(range(2 * SHAPE_BUCKET, top + 1, SHAPE_BUCKET))
        if sizes[len(sizes) - 1] != top:     # (no wraparound in this module)
            sizes.append(top)
        return sizes

    cdef void write_warm_up(self, int32_t n) noexcept nogil:
        """A throw-away token (id 0 at position 0) in each of the sequences [0, n), each an output."""
        cdef int32_t s
        self.batch.c_batch.n_tokens = 0
        for s in range(n):
            self._add_token(0, 0, s, True)

    cdef void remove_pads(self) noexcept nogil:
        """After the decode: the throw-away tokens leave the idle sequences' KV as it was."""
        cdef int32_t k
        for k in range(self.n_pad):
            llama_memory_seq_rm(self.c_mem, self.pad_seq[k], self.pad_pos[k], -1)

    cdef void _track_load(self) noexcept nogil:
        """The outputs per step (a moving average) and, with pad_gaps, whether the coming steps
        keep a stable shape (decided for the next step's chunks: this one's are planned): on as
        soon as this step's outputs or their average reach ``stable_on_at`` (a burst of arrivals
        is stable before the average catches up: while unstable, each arrival changes the
        shape), off once this step's fall below ``stable_off_at`` (as a burst's requests end one
        by one, each end would change an unstable shape; a stable one keeps it). After a busy
        spell (the loop went idle in between: off), the average left high turns it on only with
        a step of ``stable_off_at`` outputs: a lone request would otherwise turn it on and off
        every step, each switch a rebuilt graph."""
        cdef int32_t s, n = 0
        for s in range(self.n_seq):
            if self.plan_kind[s] == P_TOKEN or (self.plan_kind[s] == P_CHUNK and self.plan_out[s]):
                n += 1
        self.load += (n - self.load) / 16.0
        if self.pad_gaps:
            if not self.stable and (n >= self.stable_on_at
                                    or (self.load >= self.stable_on_at and n >= self.stable_off_at)):
                self.stable = True
            elif self.stable and n < self.stable_off_at:
                self.stable = False

    cdef void _device_policy(self) noexcept nogil:
        """``dev_auto``: follow the outputs per step; on switching, every sequence at once
        (one re-plan of libllama's graph rather than one per arriving request). Device greedy
        chains stay either way."""
        cdef int32_t s
        cdef int st
        if not self.dev_on and self.load >= self.dev_on_at:
            self.dev_on = True
            for s in range(self.n_seq):
                st = llamacy_load(&self.seqs[s].state)
                if st == SEQ_ACTIVE or st == SEQ_PREFILL:
                    self.dev.choose(s, self.seqs[s].core, True)
                elif self.dev.modes[s] == MODE_HOST:       # idle: ready for the next request
                    self.dev.use(s, MODE_TOP_K)
        elif self.dev_on and self.load < self.dev_off_at:
            self.dev_on = False
            for s in range(self.n_seq):
                if self.dev.modes[s] == MODE_TOP_K:
                    self.dev.use(s, MODE_HOST)

    cdef void _choose_rows(self, int32_t s) noexcept nogil:
        """Before the decode: ``s`` gets its device greedy's token if its request can use it,
        else its device candidates if on and its request can use them, else its whole logits
        row (DeviceSampling.choose). Each switch makes libllama re-plan its graph and reserve its
        buffers again (milliseconds), once per decode however many switched: a sequence keeps
        its mode until a request needs another one, and then every idle sequence switches with
        it (the next requests are likely of the same kind)."""
        cdef int32_t t
        cdef int st, before
        if self.dev is None:
            return
        before = self.dev.modes[s]
        self.dev.choose(s, self.seqs[s].core, self.dev_on)
        if self.dev.modes[s] != before:
            for t in range(self.n_seq):
                st = llamacy_load(&self.seqs[t].state)
                if (st == SEQ_FREE or st == SEQ_DONE) and self.dev.modes[t] != self.dev.modes[s]:
                    self.dev.use(t, self.dev.modes[s])

    cdef void _no_request(self, int32_t s) noexcept nogil:
        """Before the decode: an output of ``s`` that nothing samples (a throw-away token, a
        prompt token streamed in a stable step) — a device greedy's inputs must not read its
        request, which may end meanwhile."""
        if self.dev is not None:
            self.dev.forget(s)

    cdef void _add_token(self, int32_t tok, int32_t pos, int32_t seq, bint logits) noexcept nogil:
        cdef llama_batch * b = &self.batch.c_batch
        cdef int32_t i = b.n_tokens
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1

    cdef int32_t _self_extend(self, GenSeq * q, int32_t s) noexcept nogil:
        """Group the oldest window of positions by ga_n once the sequence passes ga_i + ga_w
        (the KV position divide of self-extend); returns the next position."""
        cdef int32_t n = self.ga_n, w = self.ga_w, ib, bd, dd
        while q.n_past_se >= q.ga_i + w:
            ib = (n * q.ga_i) // w
            bd = (w // n) * (n - 1)
            dd = (w // n) - ib * bd - w
            llama_memory_seq_add(self.c_mem, s, q.ga_i, q.n_past_se, ib * bd)
            llama_memory_seq_div(self.c_mem, s, q.ga_i + ib * bd, q.ga_i + ib * bd + w, n)
            llama_memory_seq_add(self.c_mem, s, q.ga_i + ib * bd + w, q.n_past_se + ib * bd, dd)
            q.n_past_se -= bd
            q.ga_i += w // n
        return q.n_past_se
