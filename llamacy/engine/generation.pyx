# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The generation step loop, in C on the engine thread: it never waits for Python.

A ``Generator`` owns the per-sequence state of every request the scheduler hands it (``add``):
its prompt still to decode, the token it sampled last, its position, how many tokens it may
still produce, its stop strings, its sampler. ``run()`` (GIL released for its whole length)
repeats steps until it runs out of work or Python asks it to pause:

  assemble the batch — one token per generating sequence (shifting a full context first, or
  applying self-extend), then prompt chunks FIFO up to n_batch — decode it (split in halving
  pieces while llama_decode finds no KV room), sample every output in parallel, and decide in C
  whether each sequence goes on: end of generation, n_predict reached, a stop string completed
  (matched on bytes; the text layer cuts the text), nothing allowed, cancelled.

What a step decodes is planned by ``step_plan.StepPlanner`` (its C types: ``loop_types.pxd``);
its outputs are located and sampled by ``step_outputs.StepOutputs``.
Each step's results go into a ring of step records, and an eventfd wakes the IOLoop, which
``drain()``s them in bulk and turns token ids into text and events. The loop holds a reference
to every sampler it may use until the sequence is released, so Python can finish a request
while the loop runs on.
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memmove, memcmp
from posix.unistd cimport write, usleep

from third_party.ggml.llama cimport *
from llamacy.engine.context cimport Context, Batch
from llamacy.engine.sampling cimport Sampler
from llamacy.engine.sampler_core cimport SamplerCore, NOTHING_ALLOWED
from llamacy.engine.device_sampling cimport DeviceSampling
from llamacy.engine.loop_types cimport *
from llamacy.engine.step_plan cimport StepPlanner
from llamacy.engine.step_outputs cimport StepOutputs
from llamacy.engine.topk cimport TokenProb

from llamacy.engine.step_outputs import ROWS_PER_THREAD
from llamacy.errors import DecodeError, LlamacyError

cdef enum:
    # run() results
    R_PAUSED = 0
    R_IDLE = 1
    R_ERROR = 2
    RING = 16             # step records between the loop and the IOLoop

# the device top-k in "auto": on from this many outputs per step (a moving average), off below the
# second. Measured on an H200: the device's top-k (a sort) costs about 0.3 ms a step whatever the
# rows, and sampling a whole row on the host about 40 us, so it pays from about 8 rows; 16 / 8
# keep one sampled stream (and 8 clients, 4 outputs a step) on the host and a loaded server's
# tail (the sampled mix at 64 clients averages 38) on the device, away from switching back and
# forth (each switch rebuilds the decode graph).
DEVICE_ON_AT = 16.0
DEVICE_OFF_AT = 8.0
# stable shape (with pad_gaps): from this many outputs in a step (or on average, the step at least
# the second), off when a step has fewer than the second or the loop goes idle
STABLE_ON_AT = 24.0
STABLE_OFF_AT = 4.0
# stable shape: a prompt remainder up to this many tokens goes in a token a step (longer ones in
# one chunk: a step of another shape, which libllama rebuilds its graph for, then rebuilds back)
STREAM_MAX = 16

ENTRY_TOKEN, ENTRY_PREFILL, ENTRY_SHIFT = E_TOKEN, E_PREFILL, E_SHIFT
END_EOG, END_LIMIT, END_STOP, END_NOTHING = F_EOG, F_LIMIT, F_STOP, F_NOTHING
END_CANCELLED, END_CONTEXT, END_PROMPT_ONLY = F_CANCELLED, F_CONTEXT, F_PROMPT_ONLY
RUN_PAUSED, RUN_IDLE, RUN_ERROR = R_PAUSED, R_IDLE, R_ERROR


cdef class Generator:
    cdef Context ctx
    cdef Batch batch
    cdef llama_context * c_ctx
    cdef int32_t n_seq
    cdef int32_t n_batch
    cdef int32_t n_vocab
    cdef GenSeq * seqs
    cdef list _samplers
    cdef object _pieces
    cdef const char ** piece_ptr
    cdef int32_t * piece_len
    cdef int32_t max_piece
    cdef uint8_t * is_eog
    cdef int32_t max_n_probs
    cdef int64_t next_order
    cdef StepRecord ring[RING]
    cdef int head                 # records written (producer: the loop)
    cdef int tail                 # records drained (consumer: the IOLoop)
    cdef int pause_flag
    cdef int notify_fd
    cdef StepPlanner plan          # what each step decodes (and its outputs: plan.out_*)
    cdef StepOutputs outs          # the step's outputs: rows located, sampled
    cdef bint sync_apart          # wait for the device right after llama_decode (timed as "sync")
    # a failed step
    cdef int error_rc
    cdef object error
    cdef object fault_hook
    cdef bint has_fault_hook
    # where the engine thread's time goes (read by the IOLoop: approximate, never torn badly)
    cdef LoopCounters tally

    def __cinit__(self):
        self.seqs = NULL
        self.piece_ptr = NULL
        self.piece_len = NULL
        self.is_eog = NULL
        for i in range(RING):
            self.ring[i].entries = NULL
            self.ring[i].probs = NULL

    def __init__(self, Context ctx, int32_t n_seq, int32_t n_batch, pieces, eog_tokens, *, int32_t ga_n=1,
                 int32_t ga_w=512, int32_t max_n_probs=100, int notify_fd=-1, bint pad_gaps=False,
                 DeviceSampling device=None, bint device_auto=False, double device_on_at=DEVICE_ON_AT,
                 double device_off_at=DEVICE_OFF_AT, double stable_on_at=STABLE_ON_AT,
                 double stable_off_at=STABLE_OFF_AT, int32_t stream_max=STREAM_MAX,
                 int32_t rows_per_thread=ROWS_PER_THREAD):
        """``pad_gaps`` (a GPU): throw-away tokens for idle sequences and, under load, a stable
        batch shape; ``device``/``device_auto``: outputs sampled on the device (top-k candidates,
        greedy tokens) — both decided per step by ``step_plan.StepPlanner`` (its docstring says how),
        with the thresholds given here. With ``pad_gaps`` the loop also waits for the device
        right after each decode, timed apart ("sync"). A step's outputs are sampled on up to the
        decode's thread count, at least ``rows_per_thread`` whole-row outputs each (1 to 16)."""
        ctx._check()
        self.ctx = ctx
        self.c_ctx = ctx.c_ctx
        self.n_seq = n_seq
        self.n_batch = n_batch
        self.batch = Batch(max(n_batch, n_seq), 1)
        self.n_vocab = ctx.n_vocab
        self.max_n_probs = max(max_n_probs, 1)
        self.notify_fd = notify_fd
        self._samplers = [None] * n_seq
        self._pieces = pieces
        self.seqs = <GenSeq *> calloc(n_seq, sizeof(GenSeq))
        self.piece_ptr = <const char **> malloc(self.n_vocab * sizeof(void *))
        self.piece_len = <int32_t *> malloc(self.n_vocab * sizeof(int32_t))
        self.is_eog = <uint8_t *> calloc(self.n_vocab, 1)
        self.outs = StepOutputs(ctx, n_seq, self.max_n_probs, rows_per_thread)
        self.sync_apart = pad_gaps    # a GPU: its work is timed apart (on a CPU llama_decode is the work)
        if self.seqs == NULL or self.piece_ptr == NULL or self.piece_len == NULL or self.is_eog == NULL:
            raise MemoryError()
        cdef int32_t t
        cdef bytes piece
        self.max_piece = 1
        for t in range(self.n_vocab):
            piece = pieces[t]
            self.piece_ptr[t] = piece
            self.piece_len[t] = len(piece)
            self.max_piece = max(self.max_piece, len(piece))
        for t in eog_tokens:
            self.is_eog[t] = 1
        for i in range(RING):
            self.ring[i].entries = <Entry *> malloc(ENTRIES_PER_SEQ * n_seq * sizeof(Entry))
            self.ring[i].probs = <TokenProb *> malloc(n_seq * self.max_n_probs * sizeof(TokenProb))
            if self.ring[i].entries == NULL or self.ring[i].probs == NULL:
                raise MemoryError()
        self.plan = StepPlanner(ctx, self.batch, n_seq, n_batch, ga_n=ga_n, ga_w=ga_w, pad_gaps=pad_gaps,
                                stable_on_at=stable_on_at, stable_off_at=stable_off_at, stream_max=stream_max,
                                device=device,
                                device_auto=device_auto, device_on_at=device_on_at, device_off_at=device_off_at)
        self.plan.bind(self.seqs, &self.tally)
        self.fault_hook = None
        self.has_fault_hook = False

    def __dealloc__(self):
        cdef int32_t s
        if self.seqs != NULL:
            for s in range(self.n_seq):
                _free_seq(&self.seqs[s])
            free(self.seqs)
        free(self.piece_ptr)
        free(self.piece_len)
        free(self.is_eog)
        for i in range(RING):
            free(self.ring[i].entries)
            free(self.ring[i].probs)

    # --- control (IOLoop thread) ------------------------------------------------------
    def add(self, int32_t seq, Sampler sampler, prompt, int32_t n_cached, int32_t n_ctx, int32_t n_keep,
            int64_t n_predict, stops=(), *, bint trim=False):
        """Hand a request to the loop — also while it runs: it takes the sequence at its next
        step — ``prompt`` (all of it, the first ``n_cached`` tokens already in the sequence's KV),
        the slot's context size, n_keep for context shifts, n_predict (-1: no limit) and its stop
        strings (bytes). ``trim``: the KV may hold more than those ``n_cached`` tokens; the loop
        drops the rest itself before the first chunk (Python must not touch the memory while it
        runs). Entries of the sequence's previous request still in the ring are dropped."""
        self._check_seq(seq)
        cdef GenSeq * q = &self.seqs[seq]
        cdef int st = llamacy_load(&q.state)
        if st == SEQ_PREFILL or st == SEQ_ACTIVE:
            raise ValueError(f"sequence {seq} is still running")
        if sampler.c.n_probs > self.max_n_probs:
            raise ValueError(f"n_probs {sampler.c.n_probs} is above the loop's {self.max_n_probs}")
        _free_seq(q)
        if self.plan.dev is not None:
            self.plan.dev.forget(seq)
        cdef int32_t n = len(prompt), i, at = 0
        if not 0 <= n_cached < n:
            raise ValueError("a request needs at least one prompt token to evaluate")
        q.prompt = <llama_token *> malloc(n * sizeof(llama_token))
        stop_list = [s for s in stops if len(s) > 0]
        q.n_stops = len(stop_list)
        if q.n_stops:
            q.max_stop = max(len(s) for s in stop_list)
            q.stops = <char *> malloc(sum(len(s) for s in stop_list))
            q.stop_len = <int32_t *> malloc(q.n_stops * sizeof(int32_t))
            q.win = <char *> malloc(q.max_stop + self.max_piece)
        if q.prompt == NULL or (q.n_stops and (q.stops == NULL or q.stop_len == NULL or q.win == NULL)):
            _free_seq(q)
            raise MemoryError()
        for i in range(n):
            q.prompt[i] = prompt[i]
        for i, s in enumerate(stop_list):
            memcpy(q.stops + at, <const char *> s, len(s))
            q.stop_len[i] = len(s)
            at += len(s)
        q.win_len = 0
        q.n_prompt = n
        q.n_prompt_done = n_cached
        q.n_past = n_cached
        q.n_past_se = n_cached
        q.ga_i = 0
        q.n_ctx = n_ctx
        q.n_keep = n_keep
        q.n_left = n_predict
        q.want_sample = n_predict != 0
        q.order = self.next_order
        self.next_order += 1
        q.core = &sampler.c
        q.token = -1
        q.cancelled = 0
        q.trim_from = n_cached if trim else -1
        q.epoch += 1
        self._samplers[seq] = sampler
        llamacy_store(&q.state, SEQ_PREFILL)

    def release(self, int32_t seq, bint force=False) -> None:
        """Forget an ended sequence and drop its sampler; ``force`` also one that is still
        prefilling or generating — only while run() is not running."""
        self._check_seq(seq)
        cdef GenSeq * q = &self.seqs[seq]
        if (q.state == SEQ_PREFILL or q.state == SEQ_ACTIVE) and not force:
            raise ValueError(f"sequence {seq} is still running: cancel it first")
        llamacy_store(&q.state, SEQ_FREE)
        _free_seq(q)
        if self.plan.dev is not None:     # its device greedy must not read the sampler dropped here
            self.plan.dev.forget(seq)
        self._samplers[seq] = None

    def cancel(self, int32_t seq) -> None:
        """Stop a sequence at the next step (it ends with END_CANCELLED)."""
        self._check_seq(seq)
        llamacy_store(&self.seqs[seq].cancelled, 1)

    def pause(self) -> None:
        """Make run() return after the step in flight (Python needs the context)."""
        llamacy_store(&self.pause_flag, 1)

    def state(self, int32_t seq) -> str:
        self._check_seq(seq)
        return ("free", "prefill", "active", "done")[llamacy_load(&self.seqs[seq].state)]

    @property
    def has_work(self) -> bool:
        cdef int32_t s
        cdef int st
        for s in range(self.n_seq):
            st = llamacy_load(&self.seqs[s].state)
            if st == SEQ_PREFILL or st == SEQ_ACTIVE:
                return True
        return False

    def done_seqs(self) -> list:
        return [s for s in range(self.n_seq) if llamacy_load(&self.seqs[s].state) == SEQ_DONE]

    def warm_up(self) -> int:
        """Decode each batch size a GPU loop's steps take (``StepPlanner.warm_up_shapes``) once
        without device sampling, then with the device top-k (and the device greedy, if on), and
        drop it all from the memory: CUDA loads a kernel on its first use (milliseconds apiece:
        cuBLAS's for each batch size, the top-k's sorts, the greedy's gathers and scatters),
        which would otherwise land in the first busy steps at each size. Only before the
        first request (it empties the memory); returns the decodes made."""
        cdef DeviceSampling dev = self.plan.dev
        cdef int32_t n, s
        cdef int rc = 0
        cdef int64_t switches = dev.switches if dev is not None else 0
        if self.has_work:
            raise RuntimeError("warm_up() is for before the first request")
        made = 0
        modes = ["host"]
        if dev is not None and dev.available:
            modes += ["top-k", "greedy"] if dev.greedy_slots > 0 else ["top-k"]
        try:
            for mode in modes:
                if dev is not None:       # all at once: each switch re-plans libllama's graph
                    for s in range(self.n_seq):
                        dev.set_mode(s, mode)
                for n in self.plan.warm_up_shapes():
                    self.plan.write_warm_up(n)
                    if dev is not None:
                        dev.begin_decode(&self.batch.c_batch)
                    with nogil:
                        rc = llama_decode(self.c_ctx, self.batch.c_batch)
                        if rc == 0:
                            llama_synchronize(self.c_ctx)
                    llama_memory_seq_rm(self.plan.c_mem, -1, -1, -1)
                    if rc != 0:
                        raise DecodeError(f"llama_decode failed with code {rc} warming up {n} sequences", rc)
                    made += 1
        finally:
            self.batch.c_batch.n_tokens = 0
            if dev is not None:           # as the loop would have them, and no switches counted
                for s in range(self.n_seq):
                    dev.ensure(s, not self.plan.dev_auto or self.plan.dev_on)
                dev.switches = switches
        return made

    def set_fault_hook(self, hook) -> None:
        """Test-only: ``hook(n_tokens)`` runs before every llama_decode; it may raise (the step
        fails) or return 1 (as if llama_decode found no KV room)."""
        self.fault_hook = hook
        self.has_fault_hook = hook is not None

    def failed_step(self):
        """After run() returned RUN_ERROR: (the exception, the sequences of the failed step)."""
        exc = self.error
        if exc is None:
            exc = DecodeError(f"llama_decode failed with code {self.error_rc}", self.error_rc)
        return exc, [self.plan.in_step[i] for i in range(self.plan.n_in_step)]

    cdef int _check_seq(self, int32_t seq) except -1:
        if not 0 <= seq < self.n_seq:
            raise ValueError(f"sequence {seq} out of range [0, {self.n_seq})")
        return 0

    # --- the loop (engine thread) -------------------------------------------------------
    def resume(self) -> None:
        """Clear a pause request (before run(), when Python has done what it paused for)."""
        llamacy_store(&self.pause_flag, 0)

    def run(self) -> int:
        """Run steps — at least one — until paused (RUN_PAUSED: pause() was called), out of work
        (RUN_IDLE) or failed (RUN_ERROR: failed_step() tells what)."""
        self.ctx._check()
        self.error = None
        cdef int rc
        with nogil:
            rc = self._run()
        return rc

    cdef int _run(self) noexcept nogil:
        cdef uint64_t one = 1
        cdef int n
        cdef StepRecord * rec
        cdef double t0, mark = now(), t1
        self.tally.runs += 1
        while True:
            if self.head - llamacy_load(&self.tail) >= RING:   # the IOLoop is behind: wait for it
                t0 = now()
                while self.head - llamacy_load(&self.tail) >= RING:
                    usleep(50)
                self.tally.wait_s += now() - t0
            rec = &self.ring[self.head % RING]
            n = self._step(rec)
            t1 = now()
            self.tally.run_s += t1 - mark       # counted as it goes: a long run shows in /metrics
            mark = t1
            if n < 0:
                return R_ERROR
            if n == 0:
                return R_IDLE
            llamacy_store(&self.head, self.head + 1)
            if self.notify_fd >= 0:
                write(self.notify_fd, &one, sizeof(one))
            if llamacy_load(&self.pause_flag):   # checked after a step: every run makes progress
                return R_PAUSED

    cdef int _step(self, StepRecord * rec) noexcept nogil:
        """One step; returns the number of entries written, 0 when there was nothing to do,
        -1 when the decode failed."""
        cdef double t0 = now()
        cdef int32_t k, n_planned
        cdef int rc
        rec.n_entries = 0
        rec.n_probs_used = 0
        rec.n_prompt = 0
        rec.n_generated = 0
        rec.split_view = 0
        rec.n_tokens = 0
        self.batch.c_batch.n_tokens = 0
        # 1. what the step decodes, written into the batch in sequence order
        n_planned = self.plan.plan(rec)
        if n_planned == 0:
            rec.seconds = now() - t0
            return rec.n_entries
        self.plan.write_batch(self.plan.pad_gaps, n_planned)
        rec.n_tokens = n_planned
        self.tally.steps += 1
        self.tally.tokens += n_planned
        # 2. decode and sample
        rc = self._decode_and_sample(rec)
        self.plan.remove_pads()
        if rc != 0:
            for k in range(self.plan.n_in_step):
                llamacy_store(&self.seqs[self.plan.in_step[k]].state, SEQ_DONE)
            return -1
        # 3. what each sequence does next
        for k in range(self.plan.n_out):
            self._advance(rec, k)
        rec.seconds = now() - t0
        return rec.n_entries

    cdef void _advance(self, StepRecord * rec, int32_t k) noexcept nogil:
        cdef int32_t s = self.plan.out_seq[k]
        cdef GenSeq * q = &self.seqs[s]
        cdef llama_token tok = self.outs.tok[k]
        cdef int32_t flags = 0
        cdef Entry * e
        if self.plan.out_decoded[k] >= 0:
            q.n_past += 1              # the token sampled last step is now in the KV
        if tok < 0:
            flags = F_NOTHING
        else:
            rec.n_generated += 1
            if self.is_eog[tok]:
                flags = F_EOG
            else:
                if q.n_left > 0:
                    q.n_left -= 1
                    if q.n_left == 0:
                        flags |= F_LIMIT
                if q.n_stops and _stop_completed(q, self.piece_ptr[tok], self.piece_len[tok]):
                    flags |= F_STOP
        e = add_entry(rec, self.seqs, E_TOKEN, s, tok, self.plan.out_decoded[k], flags)
        if self.outs.n_probs[k] > 0:
            e.probs_at = rec.n_probs_used
            e.n_probs = self.outs.n_probs[k]
            memcpy(&rec.probs[rec.n_probs_used], self.outs.probs[k], e.n_probs * sizeof(TokenProb))
            rec.n_probs_used += e.n_probs
        if flags:
            llamacy_store(&q.state, SEQ_DONE)
        else:
            q.token = tok

    cdef int _decode(self, int32_t start, int32_t n) noexcept nogil:
        cdef llama_batch view = self.batch.c_batch
        cdef int rc = 0
        if self.has_fault_hook:
            rc = self._call_fault_hook(n)
            if rc != 0:
                return rc
        view.n_tokens = n
        view.token = view.token + start
        view.pos = view.pos + start
        view.n_seq_id = view.n_seq_id + start
        view.seq_id = view.seq_id + start
        view.logits = view.logits + start
        if self.plan.dev is not None:
            self.plan.dev.begin_decode(&view)
        return llama_decode(self.c_ctx, view)

    cdef int _call_fault_hook(self, int32_t n) noexcept nogil:
        with gil:
            try:
                return int(self.fault_hook(n) or 0)
            except BaseException as exc:
                self.error = exc
                return -100

    cdef int _decode_and_sample(self, StepRecord * rec) noexcept nogil:
        """Decode the batch — in halving pieces while there is no KV room for it (llama_decode
        returns 1, leaving the memory as it was) — sampling each piece's outputs before the next."""
        cdef int32_t n = self.batch.c_batch.n_tokens, start = 0, view = n, m, n_pick
        cdef int rc
        cdef double t0
        while start < n:
            m = view if view < n - start else n - start
            t0 = now()
            rc = self._decode(start, m)
            self.tally.decode_s += now() - t0
            if rc == 1 and self.plan.n_pad > 0 and start == 0:   # no room with the padding: without it
                self.plan.write_batch(False, 0)
                n = self.batch.c_batch.n_tokens
                view = n
                continue
            if rc == 0 and self.sync_apart:
                t0 = now()
                llama_synchronize(self.c_ctx)
                self.tally.sync_s += now() - t0
            if rc == 1 and m > 1:
                view = m // 2
                rec.split_view = view
                continue
            if rc != 0:
                self.error_rc = rc
                return rc
            t0 = now()
            n_pick = self.outs.resolve(start, m, self.plan.n_out, self.plan.out_idx, self.plan.out_seq,
                                       self.batch.c_batch.logits, self.seqs, self.plan.dev, &self.tally)
            self.outs.sample(self.plan.n_out, n_pick)
            self.tally.sample_s += now() - t0
            start += m
        return 0

    # --- results (IOLoop thread) --------------------------------------------------------
    def drain(self) -> list:
        """The steps finished since the last drain: [(seconds, n_prompt, n_generated, n_tokens,
        split_view, entries)], entries as (kind, seq, value, decoded, flags, probs or None);
        split_view > 0 when the batch of n_tokens had to be decoded in pieces of at most that many."""
        cdef int tail = self.tail, head = llamacy_load(&self.head), i, j
        cdef StepRecord * rec
        cdef Entry * e
        out = []
        while tail < head:
            rec = &self.ring[tail % RING]
            entries = []
            for i in range(rec.n_entries):
                e = &rec.entries[i]
                if e.epoch != self.seqs[e.seq].epoch:   # its request was replaced since (add())
                    continue
                probs = None
                if e.n_probs:
                    probs = [(rec.probs[e.probs_at + j].token, rec.probs[e.probs_at + j].prob)
                             for j in range(e.n_probs)]
                entries.append((e.kind, e.seq, e.value, e.decoded, e.flags, probs))
            out.append((rec.seconds, rec.n_prompt, rec.n_generated, rec.n_tokens, rec.split_view, entries))
            tail += 1
        llamacy_store(&self.tail, tail)
        return out

    @property
    def counters(self) -> dict:
        """Where the engine thread's time went since the loop was made: run() calls, steps,
        tokens decoded, and seconds inside run(), in llama_decode, waiting for the device, sampling, and waiting for the
        IOLoop to take its results; the throw-away tokens of ``pad_gaps``; outputs sampled, of
        which on the device (of those, by a device greedy), and the device chains' attach/detach
        switches; and the decode graphs libllama reused (the batch kept its shape) rather than
        rebuilt."""
        c = self.tally
        reused = llama_perf_context(self.ctx.c_ctx).n_reused if self.ctx.c_ctx != NULL else 0   # NULL: closed
        return {"graphs_reused": reused,
                "device_switches": self.plan.dev.switches if self.plan.dev is not None else 0, "outputs": c.outputs,
                "device_outputs": c.device_outputs, "device_greedy_outputs": c.device_greedy_outputs,
                "device_one_copy_outputs": c.device_one_copy_outputs,
                "runs": c.runs, "steps": c.steps, "tokens": c.tokens, "pad_tokens": c.pad_tokens,
                "run_seconds": c.run_s, "decode_seconds": c.decode_s, "sync_seconds": c.sync_s,
                "sample_seconds": c.sample_s, "wait_seconds": c.wait_s}

    @property
    def batch_tokens(self) -> int:
        """Tokens in the last step's batch (its size when it failed)."""
        return self.batch.c_batch.n_tokens


cdef void _free_seq(GenSeq * q) noexcept nogil:
    free(q.prompt)
    free(q.stops)
    free(q.stop_len)
    free(q.win)
    q.prompt = NULL
    q.stops = NULL
    q.stop_len = NULL
    q.win = NULL
    q.n_stops = 0
    q.core = NULL


cdef bint _stop_completed(GenSeq * q, const char * piece, int32_t n) noexcept nogil:
    """Append a token's bytes to the sequence's window and tell whether a stop string now ends
    inside them (the window keeps the last max_stop - 1 bytes between tokens)."""
    cdef int32_t old = q.win_len, total, j, L, at = 0, first, p, keep
    cdef bint found = False
    memcpy(q.win + old, piece, n)
    total = old + n
    for j in range(q.n_stops):
        L = q.stop_len[j]
        first = old - L + 1
        if first < 0:
            first = 0
        p = first
        while not found and p + L <= total:
            if memcmp(q.win + p, q.stops + at, L) == 0:
                found = True
            p += 1
        at += L
        if found:
            break
    keep = q.max_stop - 1
    if keep > total:
        keep = total
    memmove(q.win, q.win + total - keep, keep)
    q.win_len = keep
    return found
