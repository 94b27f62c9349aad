# Hand-written declarations of ggml-rpc.h (ggml's RPC backend: layers on other machines).
# Named ggml_rpc.pxd because a module name cannot hold a dash.
#
# The engine is built with loadable backends (GGML_BACKEND_DL), so libggml-rpc.so is not linked:
# its functions are reached through ggml_backend_reg_get_proc_address() of the "RPC" registry
# entry. The function-pointer types below are derived in C from the real prototypes
# (__typeof__ of the declared functions, which references no symbol), so the compiler still
# checks every call against the pinned header.
from third_party.ggml.ggml_backend cimport ggml_backend_reg_t, ggml_backend_dev_t

cdef extern from "ggml-rpc.h" nogil:
    int RPC_PROTO_MAJOR_VERSION
    int RPC_PROTO_MINOR_VERSION
    int RPC_PROTO_PATCH_VERSION
    int GGML_RPC_MAX_SERVERS

cdef extern from *:
    """
    #include "ggml-rpc.h"
    typedef __typeof__(&ggml_backend_rpc_add_server) llamacy_rpc_add_server_fn;
    typedef __typeof__(&ggml_backend_rpc_start_server) llamacy_rpc_start_server_fn;
    """
    # ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)
    ctypedef ggml_backend_reg_t (*llamacy_rpc_add_server_fn)(const char * endpoint) noexcept nogil
    # void ggml_backend_rpc_start_server(const char * endpoint, const char * cache_dir,
    #                                    size_t n_threads, size_t n_devices, ggml_backend_dev_t * devices)
    ctypedef void (*llamacy_rpc_start_server_fn)(const char * endpoint, const char * cache_dir, size_t n_threads,
                                                 size_t n_devices, ggml_backend_dev_t * devices) noexcept nogil
