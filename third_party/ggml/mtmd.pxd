# Hand-written declarations of the parts of mtmd.h (libmtmd: images through a multimodal
# projector) that llamacy uses. Extern'd from the real header of the pinned engine (see PIN),
# so the C compiler checks them.

from libc.stdint cimport int32_t, uint32_t
from third_party.ggml.llama cimport llama_model, llama_token, llama_pos, llama_flash_attn_type


cdef extern from "mtmd.h" nogil:
    cdef enum mtmd_input_chunk_type:
        MTMD_INPUT_CHUNK_TYPE_TEXT
        MTMD_INPUT_CHUNK_TYPE_IMAGE
        MTMD_INPUT_CHUNK_TYPE_AUDIO

    ctypedef struct mtmd_context:
        pass
    ctypedef struct mtmd_bitmap:
        pass
    ctypedef struct mtmd_input_chunk:
        pass
    ctypedef struct mtmd_input_chunks:
        pass

    ctypedef struct mtmd_input_text:
        const char * text
        size_t text_len
        bint add_special
        bint parse_special

    cdef struct mtmd_context_params:     # the fields llamacy sets
        bint use_gpu
        bint print_timings
        int n_threads
        llama_flash_attn_type flash_attn_type
        bint warmup

    const char * mtmd_default_marker()
    mtmd_context_params mtmd_context_params_default()
    mtmd_context * mtmd_init_from_file(const char * mmproj_fname, const llama_model * text_model,
                                       const mtmd_context_params ctx_params)
    void mtmd_free(mtmd_context * ctx)
    bint mtmd_decode_use_mrope(const mtmd_context * ctx)
    bint mtmd_support_vision(const mtmd_context * ctx)
    bint mtmd_support_audio(const mtmd_context * ctx)
    const char * mtmd_get_marker(const mtmd_context * ctx)

    uint32_t mtmd_bitmap_get_nx(const mtmd_bitmap * bitmap)
    uint32_t mtmd_bitmap_get_ny(const mtmd_bitmap * bitmap)
    bint mtmd_bitmap_is_audio(const mtmd_bitmap * bitmap)
    void mtmd_bitmap_free(mtmd_bitmap * bitmap)
    void mtmd_bitmap_set_id(mtmd_bitmap * bitmap, const char * id)

    mtmd_input_chunks * mtmd_input_chunks_init()
    size_t mtmd_input_chunks_size(const mtmd_input_chunks * chunks)
    const mtmd_input_chunk * mtmd_input_chunks_get(const mtmd_input_chunks * chunks, size_t idx)
    void mtmd_input_chunks_free(mtmd_input_chunks * chunks)

    mtmd_input_chunk_type mtmd_input_chunk_get_type(const mtmd_input_chunk * chunk)
    const llama_token * mtmd_input_chunk_get_tokens_text(const mtmd_input_chunk * chunk, size_t * n_tokens_output)
    size_t mtmd_input_chunk_get_n_tokens(const mtmd_input_chunk * chunk)
    const char * mtmd_input_chunk_get_id(const mtmd_input_chunk * chunk)
    llama_pos mtmd_input_chunk_get_n_pos(const mtmd_input_chunk * chunk)

    # 0 on success, 1: the number of bitmaps does not match the markers, 2: an image failed to preprocess
    int32_t mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output, const mtmd_input_text * text,
                          const mtmd_bitmap * const * bitmaps, size_t n_bitmaps)
