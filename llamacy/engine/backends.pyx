# cython: language_level=3
"""The engine's backends: loaded from the package at run time, reported, and ggml RPC.

The engine is built with loadable backends (GGML_BACKEND_DL): ``llamacy/_engine`` holds one
``libggml-cpu-<variant>.so`` per CPU variant (x64 baseline, sse42, haswell, skylakex, …),
``libggml-rpc.so``, and ``libggml-cuda.so`` where the engine was built with CUDA.
``load_backends()`` loads them once per process (``LLAMACY_CPU_VARIANT=name`` forces one
CPU variant, e.g. to rule one out): ggml scores every CPU variant against this
CPU and loads the best one; a backend that cannot load here (CUDA without a driver) is
skipped, with the reason kept for ``report()``.

Also here: ggml RPC (``add_rpc_server`` on the client, ``serve_rpc`` for ``llamacy
rpc-server``) and the hook for the engine's fatal errors (``set_fatal_handler``).
"""
import logging
import os
import re
import socket

from posix.dlfcn cimport dlopen, dlclose, dlerror, RTLD_NOW, RTLD_LOCAL
from posix.unistd cimport pause

from third_party.ggml.ggml cimport ggml_set_abort_callback
from third_party.ggml.ggml_backend cimport *
from third_party.ggml.ggml_rpc cimport llamacy_rpc_add_server_fn, llamacy_rpc_start_server_fn

from llamacy.engine.rpc_endpoint import parse_endpoint
from llamacy.errors import LlamacyError, ModelLoadError

log = logging.getLogger("llamacy.engine")

cdef extern from "Python.h" nogil:
    int PyGILState_Check()      # safe without the GIL: it only asks whether this thread holds it

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char * dli_fname
    int dladdr(const void * addr, Dl_info * info)

ENGINE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_engine")
_BACKEND_FILE = re.compile(r"libggml-([a-z0-9_]+)\.so")

_skipped: list = []          # [(backend, reason)] of backend files present but not loaded


def load_backends(path: str | None = None) -> None:
    """Load every backend in ``path`` (default: the package's ``_engine``) once per process.

    Must run before ``llama_backend_init``, which would otherwise search the executable's
    directory and the current directory for backends.
    """
    if ggml_backend_reg_count() > 0:
        return
    path = path or ENGINE_DIR
    cdef bytes c_path = os.fsencode(path)
    cdef const char * c_dir = c_path
    cdef bytes c_file
    forced = os.environ.get("LLAMACY_CPU_VARIANT")
    if forced:   # this CPU variant instead of the best-scoring one, and every other backend
        files = sorted(os.listdir(path)) if os.path.isdir(path) else []
        if f"libggml-cpu-{forced}.so" not in files:
            raise LlamacyError(f"LLAMACY_CPU_VARIANT={forced}: no libggml-cpu-{forced}.so in {path}")
        for name in files:
            if name.startswith("libggml-") and name.endswith(".so") and name != "libggml-base.so" and (
                    not name.startswith("libggml-cpu-") or name == f"libggml-cpu-{forced}.so"):
                c_file = os.fsencode(os.path.join(path, name))
                ggml_backend_load(c_file)
    else:
        with nogil:
            ggml_backend_load_all_from_path(c_dir)
    if ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == NULL:
        variants = sorted(f for f in os.listdir(path) if f.startswith("libggml-cpu")) if os.path.isdir(path) else []
        raise LlamacyError(f"no CPU backend could be loaded from {path} (found {variants or 'none'}); "
                           "the engine libraries are incomplete")
    loaded = {_reg_name(ggml_backend_reg_get(i)).lower() for i in range(ggml_backend_reg_count())}
    for name in sorted(os.listdir(path)):
        m = _BACKEND_FILE.fullmatch(name)
        if m is None or m[1] in ("base", "cpu") or m[1] in loaded:
            continue
        reason = _dlopen_error(os.path.join(path, name)) or "no usable device on this machine"
        _skipped.append((m[1], reason))


cdef str _reg_name(ggml_backend_reg_t reg):
    return ggml_backend_reg_name(reg).decode("utf-8", "replace")


cdef str _dlopen_error(str path):
    """Why a library does not load here (None if it does)."""
    cdef bytes c_path = os.fsencode(path)
    cdef void * h = dlopen(c_path, RTLD_NOW | RTLD_LOCAL)
    cdef const char * err
    if h != NULL:
        dlclose(h)
        return None
    err = dlerror()
    return err.decode("utf-8", "replace") if err != NULL else "dlopen failed"


cdef ggml_backend_reg_t _cpu_reg():
    cdef ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    return ggml_backend_dev_backend_reg(dev) if dev != NULL else NULL


def cpu_variant() -> str:
    """The CPU backend in use, from the file it was loaded from: 'x64', 'haswell',
    'sapphirerapids', … ('generic' for a single non-variant libggml-cpu.so)."""
    cdef ggml_backend_reg_t reg = _cpu_reg()
    cdef void * sym
    cdef Dl_info info
    if reg == NULL:
        raise LlamacyError("the CPU backend is not loaded")
    sym = ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if sym == NULL or dladdr(sym, &info) == 0 or info.dli_fname == NULL:
        return "unknown"
    name = os.path.basename(info.dli_fname.decode("utf-8", "replace"))
    m = re.fullmatch(r"libggml-cpu-(.+)\.so(\.\d+)*", name)
    return m[1] if m else "generic"


def cpu_features() -> list:
    """The instruction-set features the loaded CPU variant was built for (e.g. AVX2, AVX512)."""
    cdef ggml_backend_reg_t reg = _cpu_reg()
    cdef ggml_backend_get_features_t fn
    cdef ggml_backend_feature * feat
    if reg == NULL:
        return []
    fn = <ggml_backend_get_features_t> ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if fn == NULL:
        return []
    out = []
    feat = fn(reg)
    while feat != NULL and feat.name != NULL:
        if feat.value != NULL and feat.value.decode() == "1":
            out.append(feat.name.decode())
        feat += 1
    return out


_DEV_TYPES = {GGML_BACKEND_DEVICE_TYPE_CPU: "cpu", GGML_BACKEND_DEVICE_TYPE_GPU: "gpu",
              GGML_BACKEND_DEVICE_TYPE_IGPU: "igpu", GGML_BACKEND_DEVICE_TYPE_ACCEL: "accel"}


def devices() -> list:
    """Every registered device: name, description, type, backend, memory (MiB)."""
    cdef size_t i, free, total
    cdef ggml_backend_dev_t dev
    out = []
    for i in range(ggml_backend_dev_count()):
        dev = ggml_backend_dev_get(i)
        ggml_backend_dev_memory(dev, &free, &total)
        out.append({"name": ggml_backend_dev_name(dev).decode("utf-8", "replace"),
                    "description": ggml_backend_dev_description(dev).decode("utf-8", "replace"),
                    "type": _DEV_TYPES.get(ggml_backend_dev_get_type(dev), "other"),
                    "backend": _reg_name(ggml_backend_dev_backend_reg(dev)),
                    "memory_mib": total // (1 << 20), "free_mib": free // (1 << 20)})
    return out


def gpu_devices() -> list:
    """Local GPUs (not RPC servers): what -ngl offloads to without --rpc."""
    return [d for d in devices() if d["type"] in ("gpu", "igpu") and not d["backend"].startswith("RPC")]


def devices_without_row_split() -> list:
    """Local GPUs whose backend cannot split a tensor's rows across GPUs (``-sm row``): the
    pinned engine's CUDA backend no longer has row-split buffers, and libllama then fails the
    model load with a message a user never sees."""
    cdef size_t i
    cdef ggml_backend_dev_t dev
    out = []
    for i in range(ggml_backend_dev_count()):
        dev = ggml_backend_dev_get(i)
        if ggml_backend_dev_get_type(dev) != GGML_BACKEND_DEVICE_TYPE_GPU:
            continue
        if ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev),
                                             b"ggml_backend_split_buffer_type") == NULL:
            out.append(ggml_backend_dev_name(dev).decode("utf-8", "replace"))
    return out


def report() -> dict:
    """What the engine runs on: backends, the CPU variant and its features, devices, skipped backends."""
    return {"backends": [_reg_name(ggml_backend_reg_get(i)) for i in range(ggml_backend_reg_count())],
            "cpu_variant": cpu_variant(), "cpu_features": cpu_features(), "devices": devices(),
            "skipped": [{"backend": b, "reason": r} for b, r in _skipped]}


# --- ggml RPC -------------------------------------------------------------------------------

cdef ggml_backend_reg_t _rpc_reg() except NULL:
    cdef ggml_backend_reg_t reg = ggml_backend_reg_by_name(b"RPC")
    if reg == NULL:
        raise LlamacyError("this engine has no RPC backend (libggml-rpc.so is not in "
                           f"{ENGINE_DIR}: build the engine with -DGGML_RPC=ON)")
    return reg


RPC_HANDSHAKE_S = 15.0


def add_rpc_server(endpoint: str, timeout: float = 10.0) -> list:
    """Register the devices of the RPC server at ``endpoint``; returns their names.

    The engine aborts the process when it cannot connect, and waits without limit for the
    handshake of a server busy with another client (a ggml RPC server serves one client at a
    time), so reachability is checked here first and the handshake is given RPC_HANDSHAKE_S:
    either failure is a clear ``ModelLoadError`` instead.
    """
    import threading
    host, port = parse_endpoint(endpoint)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ModelLoadError(f"RPC server {host}:{port} is not reachable: {exc}") from None
    _rpc_reg()
    result = []
    worker = threading.Thread(target=_rpc_add_server, args=(f"{host}:{port}", result), daemon=True,
                              name=f"llamacy-rpc-hello-{host}:{port}")
    worker.start()
    worker.join(RPC_HANDSHAKE_S)
    if worker.is_alive():     # stays blocked in the engine; the process is about to fail start-up
        raise ModelLoadError(f"RPC server {host}:{port} accepted the connection but did not answer the handshake "
                             f"within {RPC_HANDSHAKE_S:.0f} s (an RPC server serves one client at a time: is "
                             "another llamacy using it?)")
    cdef size_t addr = result[0] if result else 0
    cdef ggml_backend_reg_t reg = <ggml_backend_reg_t> addr
    if reg == NULL:
        raise ModelLoadError(f"RPC server {host}:{port} offers no devices")
    ggml_backend_register(reg)
    return [ggml_backend_dev_name(ggml_backend_reg_dev_get(reg, i)).decode()
            for i in range(ggml_backend_reg_dev_count(reg))]


def _rpc_add_server(str endpoint, list result) -> None:
    """ggml_backend_rpc_add_server (connect, handshake, count the devices); the registry
    entry's address goes into ``result``."""
    cdef ggml_backend_reg_t rpc = _rpc_reg()
    cdef llamacy_rpc_add_server_fn add = <llamacy_rpc_add_server_fn> ggml_backend_reg_get_proc_address(
        rpc, b"ggml_backend_rpc_add_server")
    if add == NULL:
        raise LlamacyError("the RPC backend has no ggml_backend_rpc_add_server")
    cdef bytes c_ep = endpoint.encode()
    cdef const char * ep = c_ep
    cdef ggml_backend_reg_t reg
    with nogil:
        reg = add(ep)
    result.append(<size_t> reg)


def serve_rpc(host: str, port: int, *, cache_dir: str | None = None, n_threads: int = 1) -> None:
    """Serve this machine's devices (its GPUs, else its CPU) over ggml RPC; blocks for good.

    Returns only if the engine could not start the server (e.g. the port is taken)."""
    load_backends()
    cdef ggml_backend_reg_t rpc = _rpc_reg()
    cdef llamacy_rpc_start_server_fn start = <llamacy_rpc_start_server_fn> ggml_backend_reg_get_proc_address(
        rpc, b"ggml_backend_rpc_start_server")
    if start == NULL:
        raise LlamacyError("the RPC backend has no ggml_backend_rpc_start_server")
    cdef ggml_backend_dev_t devs[64]
    cdef size_t n = 0, i
    cdef ggml_backend_dev_t dev
    for i in range(ggml_backend_dev_count()):
        dev = ggml_backend_dev_get(i)
        if n < 64 and ggml_backend_dev_get_type(dev) in (GGML_BACKEND_DEVICE_TYPE_GPU, GGML_BACKEND_DEVICE_TYPE_IGPU):
            devs[n] = dev
            n += 1
    if n == 0:
        devs[0] = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
        n = 1
    host, port = parse_endpoint(f"{host}:{port}")
    cdef bytes c_ep = f"{host}:{port}".encode()
    cdef bytes c_cache = os.fsencode(cache_dir) if cache_dir else b""
    cdef const char * ep = c_ep
    cdef const char * cache = NULL
    if cache_dir:
        cache = c_cache
    cdef size_t threads = max(1, n_threads)
    with nogil:
        start(ep, cache, threads, n, devs)


# --- fatal engine errors ----------------------------------------------------------------------

_fatal_handler = None


cdef void _on_abort(const char * message) noexcept nogil:
    """ggml's abort hook (GGML_ABORT, failed GGML_ASSERT, a lost RPC connection).

    With a handler set and a thread that does not hold the GIL (an engine or RPC thread), the
    handler is told and this thread is parked for good instead of aborting the process: the
    handler answers the clients and ends the process itself. Otherwise (no handler, or the
    GIL held, where parking would freeze Python) the message is logged and abort() follows.
    """
    cdef bint park = False
    cdef bint held = PyGILState_Check()
    with gil:
        try:
            msg = message.decode("utf-8", "replace").strip()
            if _fatal_handler is not None and not held:
                _fatal_handler(msg)
                park = True
            else:
                log.critical("engine aborted: %s", msg)
        except BaseException:
            pass
    if park:
        while True:
            pause()


def set_fatal_handler(handler) -> None:
    """Call ``handler(message)`` (from the failing thread) on a fatal engine error instead of
    aborting the process; ``None`` restores logging then abort()."""
    global _fatal_handler
    _fatal_handler = handler
    ggml_set_abort_callback(_on_abort)
