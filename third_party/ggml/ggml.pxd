# Hand-written declarations of the parts of ggml.h / ggml-cpu.h that llamacy uses.
# Extern'd from the real headers of the pinned engine (see PIN), so the C compiler checks them.

from libc.stdint cimport int64_t


cdef extern from "ggml.h" nogil:
    cdef enum ggml_type:
        GGML_TYPE_F32
        GGML_TYPE_F16
        GGML_TYPE_Q4_0
        GGML_TYPE_Q4_1
        GGML_TYPE_Q5_0
        GGML_TYPE_Q5_1
        GGML_TYPE_Q8_0
        GGML_TYPE_IQ4_NL
        GGML_TYPE_BF16
        GGML_TYPE_I32

    cdef enum ggml_log_level:
        GGML_LOG_LEVEL_NONE
        GGML_LOG_LEVEL_DEBUG
        GGML_LOG_LEVEL_INFO
        GGML_LOG_LEVEL_WARN
        GGML_LOG_LEVEL_ERROR
        GGML_LOG_LEVEL_CONT

    # graph building, for samplers that run on the backend (llamacy.engine.device_sampling)
    cdef struct ggml_context
    cdef struct ggml_cgraph
    cdef struct ggml_tensor:
        ggml_type type
        int64_t ne[4]
        size_t nb[4]
        ggml_tensor * view_src
        size_t view_offs

    ggml_tensor * ggml_top_k(ggml_context * ctx, ggml_tensor * a, int k)
    ggml_tensor * ggml_get_rows(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b)
    ggml_tensor * ggml_reshape_2d(ggml_context * ctx, ggml_tensor * a, int64_t ne0, int64_t ne1)
    ggml_tensor * ggml_reshape_3d(ggml_context * ctx, ggml_tensor * a, int64_t ne0, int64_t ne1, int64_t ne2)
    ggml_tensor * ggml_view_1d(ggml_context * ctx, ggml_tensor * a, int64_t ne0, size_t offset)
    ggml_tensor * ggml_set_name(ggml_tensor * tensor, const char * name)
    ggml_tensor * ggml_new_tensor_1d(ggml_context * ctx, ggml_type type, int64_t ne0)
    ggml_tensor * ggml_new_tensor_2d(ggml_context * ctx, ggml_type type, int64_t ne0, int64_t ne1)
    void ggml_set_input(ggml_tensor * tensor)
    ggml_tensor * ggml_dup(ggml_context * ctx, ggml_tensor * a)
    ggml_tensor * ggml_cont(ggml_context * ctx, ggml_tensor * a)
    ggml_tensor * ggml_reshape_1d(ggml_context * ctx, ggml_tensor * a, int64_t ne0)
    ggml_tensor * ggml_add(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b)
    ggml_tensor * ggml_sub(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b)
    ggml_tensor * ggml_mul(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b)
    ggml_tensor * ggml_div(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b)
    ggml_tensor * ggml_neg(ggml_context * ctx, ggml_tensor * a)
    ggml_tensor * ggml_relu(ggml_context * ctx, ggml_tensor * a)
    ggml_tensor * ggml_set_rows(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b, ggml_tensor * c)
    ggml_tensor * ggml_argmax(ggml_context * ctx, ggml_tensor * a)
    bint ggml_is_contiguous(const ggml_tensor * tensor)
    int64_t ggml_nelements(const ggml_tensor * tensor)

    ctypedef void (*ggml_log_callback)(ggml_log_level level, const char * text, void * user_data) noexcept
    ctypedef bint (*ggml_abort_callback)(void * data) noexcept

    # called by GGML_ABORT/GGML_ASSERT failures with the message, before abort()
    ctypedef void (*ggml_abort_callback_t)(const char * error_message) noexcept
    ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback)


cdef extern from "ggml-backend.h" nogil:
    # a graph input's data (an input tensor lives in a host buffer: a copy)
    void ggml_backend_tensor_set(ggml_tensor * tensor, const void * data, size_t offset, size_t size)


cdef extern from "ggml-cpu.h" nogil:
    cdef enum ggml_numa_strategy:
        GGML_NUMA_STRATEGY_DISABLED
        GGML_NUMA_STRATEGY_DISTRIBUTE
        GGML_NUMA_STRATEGY_ISOLATE
        GGML_NUMA_STRATEGY_NUMACTL
        GGML_NUMA_STRATEGY_MIRROR
