# cython: language_level=3, boundscheck=False, wraparound=False
"""Context (a llama_context with its KV memory) and Batch (a preallocated llama_batch)."""
import os

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport malloc, free

import numpy as np

from third_party.ggml.ggml cimport ggml_type, GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, \
    GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_IQ4_NL, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1
from third_party.ggml.llama cimport *
from llamacy.engine.model cimport Model, LoraAdapter

from llamacy.errors import DecodeError, NoKvSlotError, DecodeAbortedError, LlamacyError

CACHE_TYPES = {"f32": GGML_TYPE_F32, "f16": GGML_TYPE_F16, "bf16": GGML_TYPE_BF16, "q8_0": GGML_TYPE_Q8_0,
               "q4_0": GGML_TYPE_Q4_0, "q4_1": GGML_TYPE_Q4_1, "iq4_nl": GGML_TYPE_IQ4_NL,
               "q5_0": GGML_TYPE_Q5_0, "q5_1": GGML_TYPE_Q5_1}
POOLING_TYPES = {None: LLAMA_POOLING_TYPE_UNSPECIFIED, "none": LLAMA_POOLING_TYPE_NONE,
                 "mean": LLAMA_POOLING_TYPE_MEAN, "cls": LLAMA_POOLING_TYPE_CLS, "last": LLAMA_POOLING_TYPE_LAST,
                 "rank": LLAMA_POOLING_TYPE_RANK}
ROPE_SCALING_TYPES = {None: LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, "none": LLAMA_ROPE_SCALING_TYPE_NONE,
                      "linear": LLAMA_ROPE_SCALING_TYPE_LINEAR, "yarn": LLAMA_ROPE_SCALING_TYPE_YARN}
_POOLING_NAMES = {v: k for k, v in POOLING_TYPES.items()}


cdef raise_decode_error(int32_t rc, str what):
    if rc == 1:
        raise NoKvSlotError(f"{what}: no KV cache slot for the batch", rc)
    if rc == 2:
        raise DecodeAbortedError(f"{what}: aborted", rc)
    if rc == -1:
        raise DecodeError(f"{what}: invalid input batch", rc)
    raise DecodeError(f"{what} failed with code {rc}", rc)


cdef class Context:
    """A llama_context: decode/encode, KV memory ops, per-sequence state, logits/embeddings."""

    def __cinit__(self):
        self.c_ctx = NULL

    def __init__(self, Model model, *, int n_ctx=512, int n_batch=2048, int n_ubatch=512, int n_seq_max=1,
                 int n_threads=-1, int n_threads_batch=-1, rope_scaling=None, float rope_freq_base=0.0,
                 float rope_freq_scale=0.0, float yarn_ext_factor=-1.0, float yarn_attn_factor=1.0,
                 float yarn_beta_fast=32.0, float yarn_beta_slow=1.0, int yarn_orig_ctx=0, pooling=None,
                 bint flash_attn=False, str type_k="f16", str type_v="f16", float defrag_thold=-1.0,
                 bint embeddings=False, bint kv_unified=False, bint offload_kqv=True):
        if model.c_model == NULL:
            raise LlamacyError("model is closed")
        for name, val in (("cache type k", type_k), ("cache type v", type_v)):
            if val not in CACHE_TYPES:
                raise ValueError(f"unknown {name} {val!r}; expected one of {', '.join(CACHE_TYPES)}")
        if pooling not in POOLING_TYPES:
            raise ValueError(f"unknown pooling type {pooling!r}")
        if rope_scaling not in ROPE_SCALING_TYPES:
            raise ValueError(f"unknown rope scaling {rope_scaling!r}")
        if n_threads <= 0:
            n_threads = os.cpu_count() or 1
        if n_threads_batch <= 0:
            n_threads_batch = n_threads
        cdef llama_context_params p = llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = n_batch
        p.n_ubatch = min(n_ubatch, n_batch)
        if embeddings and pooling == "mean" and n_seq_max > 1:
            # the pinned engine's mean pooling needs n_ubatch to be a multiple of n_seq_max
            p.n_ubatch = max(p.n_ubatch - p.n_ubatch % n_seq_max, n_seq_max)
        p.n_seq_max = n_seq_max
        p.n_threads = n_threads
        p.n_threads_batch = n_threads_batch
        p.rope_scaling_type = ROPE_SCALING_TYPES[rope_scaling]
        p.rope_freq_base = rope_freq_base
        p.rope_freq_scale = rope_freq_scale
        p.yarn_ext_factor = yarn_ext_factor
        p.yarn_attn_factor = yarn_attn_factor
        p.yarn_beta_fast = yarn_beta_fast
        p.yarn_beta_slow = yarn_beta_slow
        p.yarn_orig_ctx = yarn_orig_ctx
        p.pooling_type = POOLING_TYPES[pooling]
        p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.type_k = CACHE_TYPES[type_k]
        p.type_v = CACHE_TYPES[type_v]
        p.defrag_thold = defrag_thold
        p.embeddings = embeddings
        p.kv_unified = kv_unified
        p.offload_kqv = offload_kqv
        p.no_perf = True
        with nogil:
            self.c_ctx = llama_init_from_model(model.c_model, p)
        if self.c_ctx == NULL:
            raise LlamacyError(f"failed to create a context (n_ctx={n_ctx}, n_batch={n_batch}, n_seq_max={n_seq_max})")
        self.model = model
        if embeddings and self.pooling == "rank" and not model.has_classifier_head:
            self.close()
            raise LlamacyError(f"rank pooling (reranking) needs a reranker model with a classification head "
                               f"(a cls or cls.output tensor); {os.path.basename(model.path)} has none")
        self.c_mem = llama_get_memory(self.c_ctx)
        self.n_vocab = model.vocab.n_vocab
        if model._loras:
            self._apply_loras(model._loras)

    def _apply_loras(self, loras):
        cdef int n = len(loras), i
        cdef llama_adapter_lora ** arr = <llama_adapter_lora **> malloc(n * sizeof(void *))
        cdef float * scales = <float *> malloc(n * sizeof(float))
        try:
            for i in range(n):
                arr[i] = (<LoraAdapter> loras[i]).c_adapter
                scales[i] = loras[i].scale
            if llama_set_adapters_lora(self.c_ctx, arr, n, scales) != 0:
                raise LlamacyError("failed to apply LoRA adapters")
        finally:
            free(arr)
            free(scales)

    def close(self) -> None:
        cdef llama_context * c = self.c_ctx
        self.c_ctx = NULL
        if c != NULL:
            llama_free(c)

    def __dealloc__(self):
        if self.c_ctx != NULL:
            llama_free(self.c_ctx)
            self.c_ctx = NULL

    cdef int _check(self) except -1:
        if self.c_ctx == NULL:
            raise LlamacyError("context is closed")
        return 0

    cdef int _check_seq(self, int seq_id, bint any_ok=False) except -1:
        """libllama asserts (aborts the process) on an unknown sequence id: refuse it here."""
        self._check()
        if any_ok and seq_id < 0:
            return 0
        if not 0 <= seq_id < <int> llama_n_seq_max(self.c_ctx):
            raise ValueError(f"sequence id {seq_id} out of range [0, {llama_n_seq_max(self.c_ctx)})")
        return 0

    @property
    def n_ctx(self) -> int:
        self._check()
        return llama_n_ctx(self.c_ctx)

    @property
    def n_ctx_seq(self) -> int:
        self._check()
        return llama_n_ctx_seq(self.c_ctx)

    @property
    def n_batch(self) -> int:
        self._check()
        return llama_n_batch(self.c_ctx)

    @property
    def n_ubatch(self) -> int:
        self._check()
        return llama_n_ubatch(self.c_ctx)

    @property
    def n_seq_max(self) -> int:
        self._check()
        return llama_n_seq_max(self.c_ctx)

    @property
    def pooling(self):
        self._check()
        return _POOLING_NAMES.get(llama_get_pooling_type(self.c_ctx))

    def set_threads(self, int n_threads, int n_threads_batch) -> None:
        self._check()
        llama_set_n_threads(self.c_ctx, n_threads, n_threads_batch)

    def set_embeddings(self, bint on) -> None:
        self._check()
        llama_set_embeddings(self.c_ctx, on)

    def decode(self, Batch batch) -> None:
        """Run the batch through the model with the GIL released. Raises DecodeError subclasses."""
        self._check()
        cdef int32_t rc
        if batch.c_batch.n_tokens == 0:
            return
        if <uint32_t> batch.c_batch.n_tokens > llama_n_batch(self.c_ctx):
            raise DecodeError(f"llama_decode: batch of {batch.c_batch.n_tokens} tokens exceeds n_batch "
                              f"{llama_n_batch(self.c_ctx)}", -1)
        with nogil:
            rc = llama_decode(self.c_ctx, batch.c_batch)
        if rc != 0:
            raise_decode_error(rc, "llama_decode")

    def encode(self, Batch batch) -> None:
        self._check()
        cdef int32_t rc
        if <uint32_t> batch.c_batch.n_tokens > llama_n_batch(self.c_ctx):
            raise DecodeError("llama_encode: batch exceeds n_batch", -1)
        with nogil:
            rc = llama_encode(self.c_ctx, batch.c_batch)
        if rc != 0:
            raise_decode_error(rc, "llama_encode")

    # --- KV memory -------------------------------------------------------------------
    def memory_clear(self, bint data=True) -> None:
        self._check()
        llama_memory_clear(self.c_mem, data)

    def seq_rm(self, int seq_id, int p0=-1, int p1=-1) -> bool:
        self._check_seq(seq_id, True)
        return llama_memory_seq_rm(self.c_mem, seq_id, p0, p1)

    def seq_cp(self, int src, int dst, int p0=-1, int p1=-1) -> None:
        self._check_seq(src)
        self._check_seq(dst)
        llama_memory_seq_cp(self.c_mem, src, dst, p0, p1)

    def seq_keep(self, int seq_id) -> None:
        self._check_seq(seq_id)
        llama_memory_seq_keep(self.c_mem, seq_id)

    def seq_add(self, int seq_id, int p0, int p1, int delta) -> None:
        self._check_seq(seq_id)
        llama_memory_seq_add(self.c_mem, seq_id, p0, p1, delta)

    def seq_div(self, int seq_id, int p0, int p1, int d) -> None:
        self._check_seq(seq_id)
        if d <= 0:
            raise ValueError("divisor must be positive")
        llama_memory_seq_div(self.c_mem, seq_id, p0, p1, d)

    def seq_pos_min(self, int seq_id) -> int:
        self._check_seq(seq_id)
        return llama_memory_seq_pos_min(self.c_mem, seq_id)

    def seq_pos_max(self, int seq_id) -> int:
        self._check_seq(seq_id)
        return llama_memory_seq_pos_max(self.c_mem, seq_id)

    @property
    def can_shift(self) -> bool:
        self._check()
        return llama_memory_can_shift(self.c_mem)

    # --- per-sequence state ----------------------------------------------------------
    def seq_state_size(self, int seq_id) -> int:
        self._check_seq(seq_id)
        return llama_state_seq_get_size(self.c_ctx, seq_id)

    def seq_get_state(self, int seq_id) -> bytes:
        self._check_seq(seq_id)
        cdef size_t size, n
        with nogil:
            size = llama_state_seq_get_size(self.c_ctx, seq_id)
        out = PyBytes_FromStringAndSize(NULL, size)
        cdef uint8_t * dst = <uint8_t *> PyBytes_AS_STRING(out)
        with nogil:
            n = llama_state_seq_get_data(self.c_ctx, dst, size, seq_id)
        if n != size:
            raise LlamacyError(f"state copy of sequence {seq_id} wrote {n} of {size} bytes")
        return out

    def seq_set_state(self, const uint8_t[::1] data, int seq_id) -> int:
        self._check_seq(seq_id)
        cdef size_t n
        cdef size_t size = data.shape[0]
        with nogil:
            n = llama_state_seq_set_data(self.c_ctx, &data[0], size, seq_id)
        if n == 0:
            raise LlamacyError(f"failed to restore the state of sequence {seq_id}")
        return n

    def seq_file_size(self, int seq_id, size_t n_tokens) -> int:
        """The size of the file seq_save_file would write for this sequence and ``n_tokens`` tokens
        (magic, version, token count, the tokens, the sequence state)."""
        self._check_seq(seq_id)
        cdef size_t size
        with nogil:
            size = llama_state_seq_get_size(self.c_ctx, seq_id)
        return 3 * sizeof(uint32_t) + n_tokens * sizeof(llama_token) + size

    def seq_save_file(self, path, int seq_id, tokens) -> int:
        """Save a sequence's KV state and its tokens to ``path``; returns bytes written."""
        self._check_seq(seq_id)
        cdef bytes c_path = os.fsencode(path)
        cdef const char * p = c_path
        cdef size_t n_tok = len(tokens), i, n
        cdef llama_token * toks = <llama_token *> malloc(max(n_tok, 1) * sizeof(llama_token))
        if toks == NULL:
            raise MemoryError()
        try:
            for i in range(n_tok):
                toks[i] = tokens[i]
            with nogil:
                n = llama_state_seq_save_file(self.c_ctx, p, seq_id, toks, n_tok)
        finally:
            free(toks)
        if n == 0:
            raise LlamacyError(f"failed to save the state of sequence {seq_id}")
        return n

    def seq_load_file(self, path, int seq_id, size_t capacity):
        """Load a file saved by seq_save_file into ``seq_id``: (bytes read, tokens)."""
        self._check_seq(seq_id)
        cdef bytes c_path = os.fsencode(path)
        cdef const char * p = c_path
        cdef size_t n_tok = 0, n, i
        cdef llama_token * toks = <llama_token *> malloc(max(capacity, 1) * sizeof(llama_token))
        if toks == NULL:
            raise MemoryError()
        try:
            with nogil:
                n = llama_state_seq_load_file(self.c_ctx, p, seq_id, toks, capacity, &n_tok)
            if n == 0:
                raise LlamacyError(f"failed to load a sequence state from {os.fsdecode(path)!r}")
            return n, [toks[i] for i in range(n_tok)]
        finally:
            free(toks)

    # --- outputs ---------------------------------------------------------------------
    def logits(self, int i):
        """Logits of output ``i`` of the last batch (negative counts from the end), as a numpy view."""
        self._check()
        cdef float * ptr = llama_get_logits_ith(self.c_ctx, i)
        if ptr == NULL:
            raise LlamacyError(f"no logits for output {i}")
        return np.asarray(<float[:self.n_vocab]> ptr)

    def embeddings_ith(self, int i):
        """Output ``i``'s embedding (pooling none): n_embd_out floats."""
        self._check()
        cdef float * ptr = llama_get_embeddings_ith(self.c_ctx, i)
        if ptr == NULL:
            raise LlamacyError(f"no embeddings for output {i}")
        return np.asarray(<float[:self.model.n_embd_out]> ptr).copy()

    def embeddings_seq(self, int seq_id):
        """A sequence's pooled embedding (n_embd_out floats), or with rank pooling its
        classifier scores (n_cls_out floats)."""
        self._check()
        cdef float * ptr = llama_get_embeddings_seq(self.c_ctx, seq_id)
        if ptr == NULL:
            raise LlamacyError(f"no pooled embeddings for sequence {seq_id}")
        cdef int n = self.model.n_cls_out if self.pooling == "rank" else self.model.n_embd_out
        return np.asarray(<float[:n]> ptr).copy()


cdef class Batch:
    """A preallocated llama_batch of ``capacity`` tokens; filled at C speed, reused per step."""

    def __cinit__(self, int32_t capacity, int32_t n_seq_max=1):
        if capacity <= 0 or n_seq_max <= 0:
            raise ValueError("capacity and n_seq_max must be positive")
        self.c_batch = llama_batch_init(capacity, 0, n_seq_max)
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.c_batch.n_tokens = 0
        self.c_n_outputs = 0

    def __dealloc__(self):
        if self.c_batch.token != NULL:
            llama_batch_free(self.c_batch)
            self.c_batch.token = NULL

    @property
    def n_tokens(self) -> int:
        return self.c_batch.n_tokens

    @property
    def n_outputs(self) -> int:
        return self.c_n_outputs

    def clear(self) -> None:
        self.c_batch.n_tokens = 0
        self.c_n_outputs = 0

    cdef int add_token(self, int32_t token, int32_t pos, int32_t seq_id, bint logits) except -1:
        cdef int32_t i = self.c_batch.n_tokens
        if i >= self.capacity:
            raise OverflowError(f"batch is full ({self.capacity} tokens)")
        self.c_batch.token[i] = token
        self.c_batch.pos[i] = pos
        self.c_batch.n_seq_id[i] = 1
        self.c_batch.seq_id[i][0] = seq_id
        self.c_batch.logits[i] = logits
        self.c_batch.n_tokens = i + 1
        if logits:
            self.c_n_outputs += 1
        return i

    def add(self, int32_t token, int32_t pos, int32_t seq_id, bint logits=False) -> int:
        """Append one token; returns its index in the batch (the index to read logits at)."""
        return self.add_token(token, pos, seq_id, logits)

    def add_sequence(self, tokens, int32_t pos0, int32_t seq_id, bint logits_last=True) -> int:
        """Append a run of tokens at consecutive positions; returns the index of the last one."""
        cdef Py_ssize_t n = len(tokens), k
        cdef int32_t i = -1
        if self.c_batch.n_tokens + n > self.capacity:
            raise OverflowError(f"batch is full ({self.capacity} tokens)")
        for k in range(n):
            i = self.add_token(tokens[k], pos0 + k, seq_id, logits_last and k == n - 1)
        return i
