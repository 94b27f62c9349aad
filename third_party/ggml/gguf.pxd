# Hand-written declarations of the parts of gguf.h that llamacy uses: reading a GGUF file's
# tensor index (no data) to learn what a model carries beyond what libllama's API reports.
# Extern'd from the real header of the pinned engine (see PIN), so the C compiler checks them.

from libc.stdint cimport int64_t


cdef extern from "gguf.h" nogil:
    cdef struct gguf_context
    cdef struct ggml_context

    cdef struct gguf_init_params:
        bint no_alloc
        ggml_context ** ctx

    gguf_context * gguf_init_from_file(const char * fname, gguf_init_params params)
    void gguf_free(gguf_context * ctx)
    int64_t gguf_find_tensor(const gguf_context * ctx, const char * name)
