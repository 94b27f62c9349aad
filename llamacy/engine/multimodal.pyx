# cython: language_level=3, boundscheck=False, wraparound=False
"""Images through libmtmd: a multimodal projector loaded beside the model (``--mmproj``).

``Projector`` owns an ``mtmd_context``. It decodes image files from memory (PNG, JPEG, … by
the stb_image inside libmtmd — nothing is decoded in Python), cuts a prompt whose text holds
the engine's media marker once per image into ``PromptChunks`` (text chunks of token ids and
image chunks, each image preprocessed for the projector), and evaluates an image chunk into a
sequence of a ``Context`` (encode through the projector, then decode its embeddings at the
chunk's positions). libmtmd's log lines go to the logger ``llamacy.engine.mtmd``; the last
error line is kept so a failed load can say why.
"""
import logging

from libc.stdint cimport int32_t
from libc.stdlib cimport malloc, free

from third_party.ggml.ggml cimport ggml_log_level, GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_INFO, \
    GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_CONT
from third_party.ggml.llama cimport llama_token, llama_pos, LLAMA_FLASH_ATTN_TYPE_AUTO
from third_party.ggml.mtmd cimport *
from third_party.ggml.mtmd_helper cimport *
from llamacy.engine.model cimport Model
from llamacy.engine.context cimport Context
from llamacy.engine.engine_log cimport LogRoute, route_level, log_line

from llamacy.errors import DecodeError, ModelLoadError

_mtmd_log = logging.getLogger("llamacy.engine.mtmd")

cdef LogRoute c_log = LogRoute(threshold=GGML_LOG_LEVEL_WARN, last_level=GGML_LOG_LEVEL_INFO)
_last_error = [""]      # the last error line libmtmd logged (why a load failed)

CHUNK_TEXT, CHUNK_IMAGE, CHUNK_AUDIO = "text", "image", "audio"
MAX_IMAGE_SIDE = 16384  # pixels: a decoded image larger than this is refused (memory bound)


cdef void _log_callback(ggml_log_level level, const char * text, void * user_data) noexcept nogil:
    cdef int lvl = route_level(&c_log, level)
    if lvl < c_log.threshold and lvl < GGML_LOG_LEVEL_ERROR:
        return
    with gil:
        msg = log_line(_mtmd_log, lvl, text)
        if msg and lvl >= GGML_LOG_LEVEL_ERROR:
            _last_error[0] = msg.strip()


cdef class Projector


def default_marker() -> str:
    """libmtmd's media marker: where an image goes in the text given to ``tokenize``."""
    return mtmd_default_marker().decode()


cdef class Image:
    """A decoded image (RGB pixels owned by libmtmd), ready to be tokenized with a prompt."""

    cdef mtmd_bitmap * c_bitmap
    cdef readonly int width
    cdef readonly int height
    cdef readonly str id

    def __cinit__(self):
        self.c_bitmap = NULL

    def __dealloc__(self):
        if self.c_bitmap != NULL:
            mtmd_bitmap_free(self.c_bitmap)

    def __repr__(self) -> str:
        return f"Image({self.width}x{self.height}, id={self.id!r})"


cdef class PromptChunks:
    """A prompt cut by libmtmd: text chunks (token ids) and image chunks (preprocessed images,
    each taking ``n_pos(i)`` positions of the sequence)."""

    cdef mtmd_input_chunks * c_chunks
    cdef readonly Projector projector

    def __cinit__(self):
        self.c_chunks = NULL

    def __dealloc__(self):
        if self.c_chunks != NULL:
            mtmd_input_chunks_free(self.c_chunks)

    def __len__(self) -> int:
        return mtmd_input_chunks_size(self.c_chunks)

    cdef const mtmd_input_chunk * _get(self, Py_ssize_t i) except NULL:
        if not 0 <= i < <Py_ssize_t> mtmd_input_chunks_size(self.c_chunks):
            raise IndexError(f"chunk {i} out of range")
        return mtmd_input_chunks_get(self.c_chunks, i)

    def kind(self, Py_ssize_t i) -> str:
        cdef mtmd_input_chunk_type t = mtmd_input_chunk_get_type(self._get(i))
        if t == MTMD_INPUT_CHUNK_TYPE_TEXT:
            return CHUNK_TEXT
        return CHUNK_IMAGE if t == MTMD_INPUT_CHUNK_TYPE_IMAGE else CHUNK_AUDIO

    def tokens(self, Py_ssize_t i) -> list:
        """A text chunk's token ids."""
        cdef size_t n = 0
        cdef const llama_token * toks = mtmd_input_chunk_get_tokens_text(self._get(i), &n)
        if toks == NULL:
            raise ValueError(f"chunk {i} is not text")
        return [toks[k] for k in range(n)]

    def n_tokens(self, Py_ssize_t i) -> int:
        return mtmd_input_chunk_get_n_tokens(self._get(i))

    def n_pos(self, Py_ssize_t i) -> int:
        """Positions the chunk takes in the sequence (equal to n_tokens unless the model uses M-RoPE)."""
        return mtmd_input_chunk_get_n_pos(self._get(i))

    def id(self, Py_ssize_t i) -> str:
        """An image chunk's id: the id of the Image it came from ("" for text)."""
        cdef const char * c_id = mtmd_input_chunk_get_id(self._get(i))
        return c_id.decode() if c_id != NULL else ""


cdef class Projector:
    """A multimodal projector (an mmproj GGUF) bound to the text model it was made for."""

    cdef mtmd_context * c_ctx
    cdef readonly Model model
    cdef readonly str path
    cdef readonly bint supports_vision
    cdef readonly bint supports_audio
    cdef readonly bint uses_mrope
    cdef readonly str marker

    def __cinit__(self):
        self.c_ctx = NULL

    def __init__(self, Model model, str path, *, bint use_gpu=True, int n_threads=4, bint verbose=False,
                 bint warmup=True):
        """Load ``path`` for ``model``; ModelLoadError (naming libmtmd's reason) when it is not a
        projector or does not match the model."""
        model._check()
        c_log.threshold = GGML_LOG_LEVEL_INFO if verbose else GGML_LOG_LEVEL_WARN
        mtmd_helper_log_set(_log_callback, NULL)
        cdef mtmd_context_params params = mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = verbose
        params.n_threads = max(n_threads, 1)
        params.warmup = warmup
        params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO
        cdef bytes b_path = path.encode()
        cdef const char * c_path = b_path
        _last_error[0] = ""
        with nogil:
            self.c_ctx = mtmd_init_from_file(c_path, model.c_model, params)
        if self.c_ctx == NULL:
            why = _last_error[0] or "not a multimodal projector GGUF"
            raise ModelLoadError(f"failed to load the multimodal projector {path}: {why}")
        self.model = model
        self.path = path
        self.supports_vision = mtmd_support_vision(self.c_ctx)
        self.supports_audio = mtmd_support_audio(self.c_ctx)
        self.uses_mrope = mtmd_decode_use_mrope(self.c_ctx)
        self.marker = mtmd_get_marker(self.c_ctx).decode()

    def close(self) -> None:
        cdef mtmd_context * c = self.c_ctx
        self.c_ctx = NULL
        if c != NULL:
            mtmd_free(c)

    def __dealloc__(self):
        if self.c_ctx != NULL:
            mtmd_free(self.c_ctx)

    cdef int _check(self) except -1:
        if self.c_ctx == NULL:
            raise ValueError("projector is closed")
        return 0

    def load_image(self, data, str id) -> Image:
        """Decode an image file held in memory (PNG, JPEG, BMP, GIF, … — what stb_image reads);
        ValueError when it is not one, or is audio. ``id`` names it in the chunks it becomes."""
        self._check()
        cdef const unsigned char[::1] buf = memoryview(data).cast("B")
        if buf.shape[0] == 0:
            raise ValueError("the image is empty")
        cdef mtmd_helper_bitmap_wrapper w
        cdef mtmd_helper_init_opt opt = mtmd_helper_init_opt_default()
        with nogil:
            w = mtmd_helper_bitmap_init_from_buf(self.c_ctx, &buf[0], buf.shape[0], False, opt)
        if w.video_ctx != NULL:
            mtmd_helper_video_free(w.video_ctx)
        if w.bitmap == NULL:
            raise ValueError("not an image format the engine decodes (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM)")
        cdef Image img = Image.__new__(Image)
        img.c_bitmap = w.bitmap
        if mtmd_bitmap_is_audio(w.bitmap):
            raise ValueError("this is audio, not an image")
        img.width = mtmd_bitmap_get_nx(w.bitmap)
        img.height = mtmd_bitmap_get_ny(w.bitmap)
        if img.width > MAX_IMAGE_SIDE or img.height > MAX_IMAGE_SIDE:
            raise ValueError(f"the image is {img.width}x{img.height} pixels, more than {MAX_IMAGE_SIDE} on a side")
        img.id = id
        mtmd_bitmap_set_id(w.bitmap, id.encode())
        return img

    def tokenize(self, str text, list images, *, bint add_special=True, bint parse_special=True) -> PromptChunks:
        """Cut ``text`` — holding ``marker`` once per image, in order — into chunks."""
        self._check()
        cdef Py_ssize_t n = len(images), i
        if text.count(self.marker) != n:    # checked here: libmtmd reports it as a preprocessing error (2)
            raise ValueError(f"the prompt has {text.count(self.marker)} image markers for {n} images: "
                             "a different number")
        cdef Image img
        cdef const mtmd_bitmap ** bitmaps = <const mtmd_bitmap **> malloc(max(n, 1) * sizeof(void *))
        if bitmaps == NULL:
            raise MemoryError()
        for i in range(n):
            img = images[i]
            bitmaps[i] = img.c_bitmap
        cdef bytes c_text = text.encode("utf-8")
        cdef mtmd_input_text inp
        inp.text = c_text
        inp.text_len = len(c_text)
        inp.add_special = add_special
        inp.parse_special = parse_special
        cdef PromptChunks chunks = PromptChunks.__new__(PromptChunks)
        chunks.projector = self
        chunks.c_chunks = mtmd_input_chunks_init()
        cdef int32_t rc
        try:
            if chunks.c_chunks == NULL:
                raise MemoryError()
            with nogil:
                rc = mtmd_tokenize(self.c_ctx, chunks.c_chunks, &inp, bitmaps, n)
        finally:
            free(bitmaps)
        if rc != 0:
            raise ValueError(f"an image could not be prepared for the projector (mtmd_tokenize: {rc})")
        return chunks

    def eval_chunk(self, PromptChunks chunks, Py_ssize_t i, Context ctx, int32_t n_past, int32_t seq_id,
                   int32_t n_batch) -> int:
        """Engine thread: evaluate chunk ``i`` into ``seq_id`` of ``ctx`` from position ``n_past``
        (an image: encoded by the projector, its embeddings decoded); returns the next position."""
        self._check()
        ctx._check()
        cdef const mtmd_input_chunk * c = chunks._get(i)
        cdef llama_pos new_n_past = n_past
        cdef int32_t rc
        with nogil:
            rc = mtmd_helper_eval_chunk_single(self.c_ctx, ctx.c_ctx, c, n_past, seq_id, max(n_batch, 1), False,
                                               &new_n_past)
        if rc != 0:
            raise DecodeError(f"evaluating {chunks.kind(i)} chunk {i} failed (code {rc})", rc)
        return new_n_past
