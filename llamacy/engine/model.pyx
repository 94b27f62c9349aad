# cython: language_level=3, boundscheck=False, wraparound=False
"""Model, Vocab and LoRA adapters: loading a GGUF file through libllama.

Also owns process-wide engine set-up: the backends loaded from the package (see backends.pyx),
``llama_backend_init`` once, and libllama/ggml log lines routed into Python's ``logging``
(logger ``llamacy.engine.llama``).
"""
import logging
import os
import re

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free

from third_party.ggml.ggml cimport ggml_log_level, GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_INFO, \
    GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_CONT, GGML_NUMA_STRATEGY_DISABLED, \
    GGML_NUMA_STRATEGY_DISTRIBUTE, GGML_NUMA_STRATEGY_ISOLATE, GGML_NUMA_STRATEGY_NUMACTL
from third_party.ggml.llama cimport *
from third_party.ggml.gguf cimport gguf_context, gguf_init_params, gguf_init_from_file, gguf_free, gguf_find_tensor
from llamacy.engine.engine_log cimport LogRoute, route_level, log_line

from llamacy.errors import ModelLoadError, LlamacyError

_engine_log = logging.getLogger("llamacy.engine.llama")

# ggml's log lines from the warning level on (--verbose: info too) go to Python logging
cdef LogRoute c_log = LogRoute(threshold=GGML_LOG_LEVEL_WARN, last_level=GGML_LOG_LEVEL_INFO)
cdef bint c_backend_ready = False


cdef void _log_callback(ggml_log_level level, const char * text, void * user_data) noexcept nogil:
    cdef int lvl = route_level(&c_log, level)
    if lvl < c_log.threshold:
        return
    with gil:
        log_line(_engine_log, lvl, text)


_SPLIT = {"none": LLAMA_SPLIT_MODE_NONE, "layer": LLAMA_SPLIT_MODE_LAYER, "row": LLAMA_SPLIT_MODE_ROW}
_NUMA = {None: GGML_NUMA_STRATEGY_DISABLED, "distribute": GGML_NUMA_STRATEGY_DISTRIBUTE,
         "isolate": GGML_NUMA_STRATEGY_ISOLATE, "numactl": GGML_NUMA_STRATEGY_NUMACTL}


def init_backend(*, verbose: bool | None = None, numa: str | None = None) -> None:
    """Initialise libllama once per process and route its logs into Python logging
    (``verbose``: forward the engine's info lines too; None keeps the current setting)."""
    global c_backend_ready
    if verbose is not None:
        c_log.threshold = GGML_LOG_LEVEL_INFO if verbose else GGML_LOG_LEVEL_WARN
    if c_backend_ready:
        return
    if numa not in _NUMA:
        raise ValueError(f"unknown NUMA strategy {numa!r}")
    llama_log_set(_log_callback, NULL)
    from llamacy.engine.backends import load_backends
    load_backends()     # before llama_backend_init, which would search the cwd for backends
    with nogil:
        llama_backend_init()
    if numa is not None:
        llama_numa_init(_NUMA[numa])
    c_backend_ready = True


def system_info() -> str:
    return llama_print_system_info().decode()


def supports_gpu_offload() -> bool:
    return llama_supports_gpu_offload()


def supports_mlock() -> bool:
    return llama_supports_mlock()


def max_devices() -> int:
    return llama_max_devices()


def chat_builtin_templates() -> list:
    """The names of libllama's built-in chat formats (``llama_chat_builtin_templates``)."""
    cdef int32_t n = llama_chat_builtin_templates(NULL, 0)
    cdef const char ** names = <const char **> malloc(max(n, 1) * sizeof(const char *))
    if names == NULL:
        raise MemoryError()
    try:
        n = llama_chat_builtin_templates(names, n)
        return [(<bytes> names[i]).decode() for i in range(n)]
    finally:
        free(names)


def chat_apply_template(str template, messages, bint add_assistant=True) -> str:
    """Render ``[(role, content), ...]`` with libllama's built-in formatter for ``template``
    (a built-in name, or a template source libllama recognises). Raises ValueError when
    libllama does not know the template."""
    cdef list encoded = []
    for role, content in messages:
        encoded.append((role.encode(), content.encode()))
    cdef size_t n_msg = len(encoded), i
    cdef llama_chat_message * chat = <llama_chat_message *> malloc(max(n_msg, 1) * sizeof(llama_chat_message))
    if chat == NULL:
        raise MemoryError()
    cdef bytes c_tmpl = template.encode()
    cdef int32_t cap = 256, n
    cdef char * buf = NULL
    try:
        for i in range(n_msg):
            chat[i].role = encoded[i][0]
            chat[i].content = encoded[i][1]
            cap += 2 * (len(encoded[i][0]) + len(encoded[i][1])) + 64
        while True:
            buf = <char *> malloc(cap)
            if buf == NULL:
                raise MemoryError()
            n = llama_chat_apply_template(c_tmpl, chat, n_msg, add_assistant, buf, cap)
            if n < 0:
                raise ValueError(f"libllama does not know the chat template {template[:60]!r}")
            if n <= cap:
                return buf[:n].decode("utf-8", "replace")
            free(buf)
            buf = NULL
            cap = n + 1
    finally:
        free(buf)
        free(chat)


cdef str _read_str(int32_t (*getter)(const llama_model *, int32_t, char *, size_t) noexcept nogil,
                   const llama_model * model, int32_t i):
    cdef size_t size = 256
    cdef char * buf
    cdef int32_t n
    while True:
        buf = <char *> malloc(size)
        if buf == NULL:
            raise MemoryError()
        try:
            n = getter(model, i, buf, size)
            if n < 0:
                return None
            if <size_t> n < size:
                return buf[:n].decode("utf-8", "replace")
        finally:
            free(buf)
        size = <size_t> n + 1


_SPLIT_NAME = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")


def _gguf_files(path: str) -> list:
    """The files of a model: one, or every part of a split GGUF (NAME-0000k-of-0000n.gguf)."""
    m = _SPLIT_NAME.match(path)
    if m is None:
        return [path]
    n = int(m.group(3))
    return [f"{m.group(1)}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]


cdef bint _gguf_has_tensor(str path, bytes name) except -1:
    """Whether the GGUF at ``path`` lists a tensor ``name`` (reads the header only)."""
    cdef gguf_init_params params
    params.no_alloc = True
    params.ctx = NULL
    cdef bytes c_path = os.fsencode(path)
    cdef const char * p = c_path
    cdef const char * c_name = name
    cdef gguf_context * g
    with nogil:
        g = gguf_init_from_file(p, params)
    if g == NULL:
        raise ModelLoadError(f"cannot read the GGUF header of {path}")
    cdef int64_t found = gguf_find_tensor(g, c_name)
    gguf_free(g)
    return found >= 0


cdef class Model:
    """A GGUF model loaded by libllama. Owns the ``llama_model``; ``close()`` frees it."""

    def __cinit__(self):
        self.c_model = NULL
        self._loras = []

    def __init__(self, path, *, int n_gpu_layers=0, int main_gpu=0, tensor_split=None, split_mode="layer",
                 bint use_mmap=True, bint use_mlock=False, bint vocab_only=False,
                 bint use_extra_bufts=False):
        init_backend()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelLoadError(f"model file not found: {self.path}")
        if split_mode not in _SPLIT:
            raise ValueError(f"split_mode must be one of {sorted(_SPLIT)}, got {split_mode!r}")
        if split_mode == "row" and n_gpu_layers != 0:
            from llamacy.engine.backends import devices_without_row_split
            unable = devices_without_row_split()
            if unable:
                raise ModelLoadError(f"-sm row: {', '.join(unable)} cannot split rows across GPUs in this "
                                     f"engine (its backend has no row-split buffers); use -sm layer")
        cdef llama_model_params params = llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.split_mode = _SPLIT[split_mode]
        params.main_gpu = main_gpu
        params.vocab_only = vocab_only
        # Weight-repacking buffer types (AMX and friends) are off by default: the pinned
        # engine's AMX matmul crashes on some CPUs that report AMX (seen on Sapphire Rapids).
        params.use_extra_bufts = use_extra_bufts
        if use_mmap:
            params.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK if use_mlock else LLAMA_LOAD_MODE_MMAP
        else:
            params.load_mode = LLAMA_LOAD_MODE_MLOCK if use_mlock else LLAMA_LOAD_MODE_NONE
        cdef size_t n_dev = llama_max_devices()
        cdef float * c_split = NULL
        cdef size_t i
        if tensor_split:
            if len(tensor_split) > n_dev:
                raise ValueError(f"tensor_split has {len(tensor_split)} values; this build has {n_dev} devices")
            c_split = <float *> malloc(n_dev * sizeof(float))
            for i in range(n_dev):
                c_split[i] = float(tensor_split[i]) if i < len(tensor_split) else 0.0
            params.tensor_split = c_split
        cdef bytes c_path = self.path.encode()
        cdef const char * p = c_path
        try:
            with nogil:
                self.c_model = llama_model_load_from_file(p, params)
        finally:
            free(c_split)
        if self.c_model == NULL:
            raise ModelLoadError(f"failed to load model from {self.path} (not a valid GGUF model?)")
        self.vocab = Vocab._create(self)

    def close(self) -> None:
        cdef llama_model * m = self.c_model
        self.c_model = NULL
        self._loras = []
        if m != NULL:
            llama_model_free(m)

    def __dealloc__(self):
        if self.c_model != NULL:
            llama_model_free(self.c_model)
            self.c_model = NULL

    cdef int _check(self) except -1:
        if self.c_model == NULL:
            raise LlamacyError("model is closed")
        return 0

    @property
    def n_ctx_train(self) -> int:
        self._check()
        return llama_model_n_ctx_train(self.c_model)

    @property
    def n_embd(self) -> int:
        self._check()
        return llama_model_n_embd(self.c_model)

    @property
    def n_embd_out(self) -> int:
        """Width of an output embedding (pooled or per token); differs from n_embd in a few models."""
        self._check()
        return llama_model_n_embd_out(self.c_model)

    @property
    def n_cls_out(self) -> int:
        """Outputs of the classifier head: the length of a rank-pooled result."""
        self._check()
        return llama_model_n_cls_out(self.c_model)

    @property
    def has_classifier_head(self) -> bool:
        """True if the GGUF has a classification head (``cls`` or ``cls.output``), which rank
        pooling (reranking) needs: without one libllama returns a slice of a hidden state."""
        return any(_gguf_has_tensor(f, name) for f in _gguf_files(self.path)
                   for name in (b"cls.weight", b"cls.output.weight"))

    @property
    def has_recurrent_state(self) -> bool:
        """True for recurrent and hybrid models (Mamba, RWKV, …), whose memory cannot drop
        the tail of a sequence: only all of it."""
        self._check()
        return llama_model_is_recurrent(self.c_model) or llama_model_is_hybrid(self.c_model)

    @property
    def n_layer(self) -> int:
        self._check()
        return llama_model_n_layer(self.c_model)

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def size(self) -> int:
        self._check()
        return llama_model_size(self.c_model)

    @property
    def n_params(self) -> int:
        self._check()
        return llama_model_n_params(self.c_model)

    @property
    def has_encoder(self) -> bool:
        self._check()
        return llama_model_has_encoder(self.c_model)

    @property
    def desc(self) -> str:
        self._check()
        cdef char buf[256]
        cdef int32_t n = llama_model_desc(self.c_model, buf, sizeof(buf))
        return buf[:max(0, min(n, 255))].decode("utf-8", "replace")

    @property
    def metadata(self) -> dict:
        """All GGUF metadata key/value pairs as strings (arrays are not exposed by libllama)."""
        self._check()
        cdef int32_t i, n = llama_model_meta_count(self.c_model)
        out = {}
        for i in range(n):
            key = _read_str(llama_model_meta_key_by_index, self.c_model, i)
            val = _read_str(llama_model_meta_val_str_by_index, self.c_model, i)
            if key is not None:
                out[key] = val
        return out

    def chat_template(self, name=None):
        """The GGUF chat template (``tokenizer.chat_template``), or None if the model has none."""
        self._check()
        cdef bytes c_name
        cdef const char * t
        if name is None:
            t = llama_model_chat_template(self.c_model, NULL)
        else:
            c_name = name.encode()
            t = llama_model_chat_template(self.c_model, c_name)
        return None if t == NULL else t.decode("utf-8", "replace")

    def load_lora(self, path, float scale=1.0) -> LoraAdapter:
        self._check()
        adapter = LoraAdapter._create(self, os.fspath(path), scale)
        self._loras.append(adapter)
        return adapter

    @property
    def loras(self) -> list:
        return list(self._loras)


cdef class Vocab:
    """The tokenizer of a model: a borrowed view that keeps its Model alive."""

    def __cinit__(self):
        self.c_vocab = NULL

    @staticmethod
    cdef Vocab _create(Model model):
        cdef Vocab v = Vocab.__new__(Vocab)
        v.model = model
        v.c_vocab = llama_model_get_vocab(model.c_model)
        v.n_vocab = llama_vocab_n_tokens(v.c_vocab)
        v._pieces = None
        return v

    cdef int _check(self) except -1:
        if self.model.c_model == NULL:
            raise LlamacyError("model is closed")
        return 0

    def tokenize(self, text, bint add_special=False, bint parse_special=False) -> list:
        """Text (str or UTF-8 bytes) to token ids."""
        self._check()
        cdef bytes data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(data) > 0x3FFFFFFF:
            raise ValueError("text too long to tokenize")
        cdef int32_t n_text = len(data)
        cdef int32_t cap = n_text + 8
        cdef llama_token * toks = <llama_token *> malloc(cap * sizeof(llama_token))
        cdef int32_t n
        cdef const char * c_text = data
        if toks == NULL:
            raise MemoryError()
        try:
            with nogil:
                n = llama_tokenize(self.c_vocab, c_text, n_text, toks, cap, add_special, parse_special)
            if n < 0:
                cap = -n
                free(toks)
                toks = <llama_token *> malloc(cap * sizeof(llama_token))
                if toks == NULL:
                    raise MemoryError()
                with nogil:
                    n = llama_tokenize(self.c_vocab, c_text, n_text, toks, cap, add_special, parse_special)
            if n < 0:
                raise ValueError("tokenization failed")
            return [toks[i] for i in range(n)]
        finally:
            free(toks)

    def token_to_piece(self, llama_token token, bint special=False) -> bytes:
        """The raw bytes of one token (may be a partial UTF-8 sequence)."""
        self._check()
        self._check_token(token)
        cdef char buf[128]
        cdef int32_t n = llama_token_to_piece(self.c_vocab, token, buf, sizeof(buf), 0, special)
        cdef char * big
        if n >= 0:
            return buf[:n]
        big = <char *> malloc(-n)
        try:
            n = llama_token_to_piece(self.c_vocab, token, big, -n, 0, special)
            return big[:max(n, 0)]
        finally:
            free(big)

    @property
    def pieces(self) -> list:
        """Every token's bytes (special tokens rendered as empty), built once: O(1) lookups."""
        if self._pieces is None:
            self._pieces = [self.token_to_piece(t, False) for t in range(self.n_vocab)]
        return self._pieces

    def detokenize(self, tokens, bint remove_special=False, bint unparse_special=False) -> str:
        self._check()
        cdef int32_t n_tok = len(tokens), i
        cdef llama_token * toks = <llama_token *> malloc(max(n_tok, 1) * sizeof(llama_token))
        cdef int32_t cap = n_tok * 8 + 16
        cdef char * text = NULL
        cdef int32_t n
        if toks == NULL:
            raise MemoryError()
        try:
            for i in range(n_tok):
                self._check_token(tokens[i])
                toks[i] = tokens[i]
            text = <char *> malloc(cap)
            n = llama_detokenize(self.c_vocab, toks, n_tok, text, cap, remove_special, unparse_special)
            if n < 0:
                cap = -n
                free(text)
                text = <char *> malloc(cap)
                n = llama_detokenize(self.c_vocab, toks, n_tok, text, cap, remove_special, unparse_special)
            if n < 0:
                raise ValueError("detokenization failed")
            return text[:n].decode("utf-8", "replace")
        finally:
            free(toks)
            free(text)

    cdef int _check_token(self, token) except -1:
        if not (0 <= token < self.n_vocab):
            raise ValueError(f"token id {token} out of range [0, {self.n_vocab})")
        return 0

    def token_text(self, llama_token token) -> str:
        self._check_token(token)
        return llama_vocab_get_text(self.c_vocab, token).decode("utf-8", "replace")

    def is_eog(self, llama_token token) -> bool:
        self._check_token(token)
        return llama_vocab_is_eog(self.c_vocab, token)

    def is_control(self, llama_token token) -> bool:
        self._check_token(token)
        return llama_vocab_is_control(self.c_vocab, token)

    @property
    def bos(self) -> int: return llama_vocab_bos(self.c_vocab)
    @property
    def eos(self) -> int: return llama_vocab_eos(self.c_vocab)
    @property
    def eot(self) -> int: return llama_vocab_eot(self.c_vocab)
    @property
    def sep(self) -> int: return llama_vocab_sep(self.c_vocab)
    @property
    def nl(self) -> int: return llama_vocab_nl(self.c_vocab)
    @property
    def pad(self) -> int: return llama_vocab_pad(self.c_vocab)
    @property
    def fim_pre(self) -> int: return llama_vocab_fim_pre(self.c_vocab)
    @property
    def fim_suf(self) -> int: return llama_vocab_fim_suf(self.c_vocab)
    @property
    def fim_mid(self) -> int: return llama_vocab_fim_mid(self.c_vocab)
    @property
    def fim_pad(self) -> int: return llama_vocab_fim_pad(self.c_vocab)
    @property
    def fim_rep(self) -> int: return llama_vocab_fim_rep(self.c_vocab)
    @property
    def fim_sep(self) -> int: return llama_vocab_fim_sep(self.c_vocab)
    @property
    def add_bos(self) -> bool: return llama_vocab_get_add_bos(self.c_vocab)
    @property
    def add_eos(self) -> bool: return llama_vocab_get_add_eos(self.c_vocab)
    @property
    def add_sep(self) -> bool: return llama_vocab_get_add_sep(self.c_vocab)

    def eog_tokens(self) -> list:
        """Every end-of-generation token id (EOS, EOT, and model-specific ones)."""
        return [t for t in range(self.n_vocab) if llama_vocab_is_eog(self.c_vocab, t)]


cdef class LoraAdapter:
    """A LoRA adapter file loaded against a model; applied to contexts with a scale."""

    def __cinit__(self):
        self.c_adapter = NULL

    @staticmethod
    cdef LoraAdapter _create(Model model, str path, float scale):
        if not os.path.isfile(path):
            raise ModelLoadError(f"LoRA adapter not found: {path}")
        cdef LoraAdapter a = LoraAdapter.__new__(LoraAdapter)
        cdef bytes c_path = path.encode()
        a.c_adapter = llama_adapter_lora_init(model.c_model, c_path)
        if a.c_adapter == NULL:
            raise ModelLoadError(f"failed to load LoRA adapter from {path}")
        a.path = path
        a.scale = scale
        a.model = model
        return a
    # The adapter is freed with its model (libllama frees adapters in llama_model_free).
