# Hand-written declarations of the parts of mtmd-helper.h that llamacy uses: decoding an image
# file from memory (stb_image inside libmtmd) and evaluating one chunk into a sequence.
# Extern'd from the real header of the pinned engine (see PIN), so the C compiler checks them.

from libc.stdint cimport int32_t
from third_party.ggml.ggml cimport ggml_log_callback
from third_party.ggml.llama cimport llama_context, llama_pos, llama_seq_id
from third_party.ggml.mtmd cimport mtmd_context, mtmd_bitmap, mtmd_input_chunk


cdef extern from "mtmd-helper.h" nogil:
    ctypedef struct mtmd_helper_video:
        pass

    ctypedef struct mtmd_helper_init_opt:
        pass

    cdef struct mtmd_helper_bitmap_wrapper:
        mtmd_bitmap * bitmap
        mtmd_helper_video * video_ctx

    mtmd_helper_init_opt mtmd_helper_init_opt_default()
    void mtmd_helper_log_set(ggml_log_callback log_callback, void * user_data)
    mtmd_helper_bitmap_wrapper mtmd_helper_bitmap_init_from_buf(const mtmd_context * ctx, const unsigned char * buf,
                                                                size_t len, bint placeholder,
                                                                mtmd_helper_init_opt opt)
    void mtmd_helper_video_free(mtmd_helper_video * ctx)
    int32_t mtmd_helper_eval_chunk_single(mtmd_context * ctx, llama_context * lctx, const mtmd_input_chunk * chunk,
                                          llama_pos n_past, llama_seq_id seq_id, int32_t n_batch, bint logits_last,
                                          llama_pos * new_n_past)
