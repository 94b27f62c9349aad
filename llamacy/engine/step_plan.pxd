from libc.stdint cimport int32_t, uint8_t
from third_party.ggml.llama cimport llama_memory_t
from llamacy.engine.context cimport Batch
from llamacy.engine.device_sampling cimport DeviceSampling
from llamacy.engine.loop_types cimport GenSeq, LoopCounters, StepRecord


cdef class StepPlanner:
    # borrowed from the Generator (bind())
    cdef GenSeq * seqs
    cdef LoopCounters * tally
    cdef Batch batch
    cdef llama_memory_t c_mem
    cdef int32_t n_seq
    cdef int32_t n_batch
    cdef int32_t n_ctx_seq
    cdef int32_t ga_n
    cdef int32_t ga_w
    # the step's plan per sequence, written into the batch in sequence order (libllama splits a
    # batch over per-sequence KV streams into one micro-batch per run of consecutive sequence ids)
    cdef int32_t * plan_kind
    cdef int32_t * plan_pos
    cdef int32_t * plan_start
    cdef int32_t * plan_n
    cdef uint8_t * plan_out       # a chunk ending its prompt: its last token is sampled
    cdef int32_t * in_step        # sequences with tokens in the step's batch (for a failed step)
    cdef int32_t n_in_step
    # the batch's outputs to sample, in batch order
    cdef int32_t n_out
    cdef int32_t * out_seq
    cdef int32_t * out_idx
    cdef int32_t * out_decoded    # the token each decoded this step (-1: its prompt's end)
    # throw-away tokens and the stable shape (pad_gaps)
    cdef bint pad_gaps
    cdef bint stable
    cdef double stable_on_at
    cdef double stable_off_at
    cdef int32_t stream_max       # stable: a prompt remainder up to this long goes in a token a step
    cdef double load              # outputs per step, moving average over about 16 steps
    cdef int32_t * pad_seq
    cdef int32_t * pad_pos
    cdef int32_t n_pad
    # device sampling
    cdef DeviceSampling dev       # or None: every output samples its whole row
    # dev_on: the device top-k (in dev_auto mode, only while the load asks for it)
    cdef bint dev_auto
    cdef bint dev_on
    cdef double dev_on_at
    cdef double dev_off_at

    cdef void bind(self, GenSeq * seqs, LoopCounters * tally) noexcept
    cdef int32_t plan(self, StepRecord * rec) noexcept nogil
    cdef void write_batch(self, bint pad, int32_t n_planned) noexcept nogil
    cdef void write_warm_up(self, int32_t n) noexcept nogil
    cdef void remove_pads(self) noexcept nogil
    cdef void _track_load(self) noexcept nogil
    cdef void _device_policy(self) noexcept nogil
    cdef void _choose_rows(self, int32_t s) noexcept nogil
    cdef void _no_request(self, int32_t s) noexcept nogil
    cdef void _add_token(self, int32_t tok, int32_t pos, int32_t seq, bint logits) noexcept nogil
    cdef int32_t _self_extend(self, GenSeq * q, int32_t s) noexcept nogil
