# cython: language_level=3
"""The C types of the generation loop, shared by its two modules — ``step_plan`` (what each step
decodes) and ``generation`` (the loop: decode, sample, decide, record) — and the inline helpers
both use: a sequence's state, step-record entries, the loop's counters."""
from libc.stdint cimport int32_t, int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from third_party.ggml.llama cimport llama_token
from llamacy.engine.sampler_core cimport SamplerCore
from llamacy.engine.topk cimport TokenProb

cdef extern from *:
    """
    static inline int llamacy_load(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void llamacy_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    int llamacy_load(const int * p) nogil
    void llamacy_store(int * p, int v) nogil

cdef enum:
    # sequence states
    SEQ_FREE = 0
    SEQ_PREFILL = 1       # prompt tokens still to decode
    SEQ_ACTIVE = 2        # generating: ``token`` sampled, to be decoded next step
    SEQ_DONE = 3          # ended; kept until Python releases it
    # step record entries
    E_TOKEN = 0           # (seq, sampled token, token decoded this step or -1, end flags, probs)
    E_PREFILL = 1         # (seq, prompt tokens decoded this step)
    E_SHIFT = 2           # (seq, tokens discarded by a context shift after the first n_keep)
    # end flags of a TOKEN entry (0: the sequence goes on)
    F_EOG = 1
    F_LIMIT = 2
    F_STOP = 4
    F_NOTHING = 8         # nothing allowed (a completed grammar with EOG banned): no token
    F_CANCELLED = 16      # no token
    F_CONTEXT = 32        # self-extend keeps every token: the context is full (no token)
    F_PROMPT_ONLY = 64    # n_predict 0: the prompt was evaluated, nothing sampled (no token)
    # a sequence's part in the step's batch
    P_NONE = 0
    P_TOKEN = 1           # its sampled token
    P_CHUNK = 2           # a chunk of its prompt
    ENTRIES_PER_SEQ = 3   # at most a SHIFT, a PREFILL and a TOKEN entry per sequence and step


ctypedef struct GenSeq:
    int state
    int cancelled
    int32_t epoch             # bumped by every add(): entries of an earlier request are dropped
    int32_t trim_from         # >= 0: drop the KV from this position on before the first prompt chunk
    SamplerCore * core        # borrowed: Generator._samplers holds the Sampler
    llama_token * prompt      # owned copy of the prompt
    int32_t n_prompt
    int32_t n_prompt_done     # prompt tokens in the KV (starts at the cached prefix)
    int64_t order             # FIFO rank among prompts
    llama_token token         # ACTIVE: the sampled token to decode next
    int32_t n_past            # tokens in the KV (positions, without self-extend)
    int32_t n_ctx
    int32_t n_keep
    int64_t n_left            # tokens it may still produce (< 0: no limit)
    bint want_sample          # sample at the prompt's end (n_predict != 0)
    int32_t ga_i              # self-extend: start of the next window to group
    int32_t n_past_se         # self-extend: the next (grouped) position
    char * stops              # owned: the stop strings' bytes, one after another
    int32_t * stop_len
    int32_t n_stops
    int32_t max_stop
    char * win                # the last max_stop - 1 bytes of the text, then the new piece
    int32_t win_len


ctypedef struct Entry:
    int32_t kind
    int32_t seq
    int32_t epoch             # the sequence's epoch when the entry was written
    int32_t value             # TOKEN: the sampled token; PREFILL: tokens decoded; SHIFT: tokens discarded
    int32_t decoded           # TOKEN: the token decoded this step (-1: the step decoded its prompt's end)
    int32_t flags
    int32_t probs_at
    int32_t n_probs


ctypedef struct StepRecord:
    Entry * entries
    int32_t n_entries
    TokenProb * probs
    int32_t n_probs_used
    double seconds
    int32_t n_prompt          # prompt tokens decoded
    int32_t n_generated       # tokens sampled
    int32_t n_tokens          # tokens in the step's batch
    int32_t split_view        # > 0: no KV room for the whole batch, decoded in pieces of at most this


ctypedef struct LoopCounters:
    int64_t runs              # run() calls (each pause for the IOLoop ends one)
    int64_t steps
    int64_t tokens            # tokens in the steps' batches
    double run_s              # inside run()
    int64_t pad_tokens        # tokens of idle sequences put in gaps (pad_gaps)
    int64_t outputs           # outputs sampled
    int64_t device_outputs    # of which sampled on the device: from top-k candidates or a device greedy's token
    int64_t device_greedy_outputs   # of which a device greedy's token
    int64_t device_one_copy_outputs # of the device outputs, those whose step's results of their kind came back in one copy
    double decode_s           # in llama_decode (on a GPU: building and launching the graph)
    double sync_s             # waiting for the device to finish the step (llama_synchronize)
    double sample_s           # sampling the outputs
    double wait_s             # waiting for the IOLoop to drain the ring (it fell RING steps behind)


cdef inline double now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline Entry * add_entry(StepRecord * rec, const GenSeq * seqs, int32_t kind, int32_t seq, int32_t value,
                              int32_t decoded, int32_t flags) noexcept nogil:
    """Append an entry for ``seq`` to the step's record, stamped with the sequence's epoch."""
    cdef Entry * e = &rec.entries[rec.n_entries]
    rec.n_entries += 1
    e.kind, e.seq, e.value, e.decoded, e.flags, e.probs_at, e.n_probs = kind, seq, value, decoded, flags, 0, 0
    e.epoch = seqs[seq].epoch
    return e


cdef inline void end_seq(StepRecord * rec, GenSeq * seqs, int32_t s, int32_t flags, int32_t decoded) noexcept nogil:
    """``s`` ends without a new token (``flags`` says why)."""
    add_entry(rec, seqs, E_TOKEN, s, -1, decoded, flags)
    llamacy_store(&seqs[s].state, SEQ_DONE)
