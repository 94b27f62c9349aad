"""Start the process with the C++ runtime preloaded where a GPU backend will load.

Python is a C program: libstdc++ arrives only later, as a dependency of the engine's libraries.
On the lent H200 machine, with the engine built with CUDA as a loadable backend, every model
load then died with SIGSEGV inside libllama (with or without a GPU visible, on every CPU
variant), while llama.cpp's own executables — C++ programs, libstdc++ loaded first — ran
fine. Putting libstdc++ in the global scope later (``dlopen(RTLD_GLOBAL)`` before the backends
load) and linking the engine with ``-Bsymbolic-functions`` did not help; starting the process
with ``LD_PRELOAD=libstdc++.so.6`` did (the model loads, serves, and passes the GPU checks).
So the command-line entry points re-execute themselves once with it, before anything is
imported, when the engine holds a GPU backend library.

``LLAMACY_PRELOAD_CXX=1`` forces this, ``=0`` turns it off.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

CXX_RUNTIME = "libstdc++.so.6"
ENGINE_DIR = Path(__file__).resolve().parent / "_engine"
GPU_BACKENDS = ("cuda", "hip", "musa", "vulkan", "sycl", "opencl", "cann")
_DONE_MARK = "LLAMACY_CXX_PRELOADED"


def engine_has_gpu_backend(engine_dir: Path = ENGINE_DIR) -> bool:
    return any((engine_dir / f"libggml-{name}.so").exists() for name in GPU_BACKENDS)


def preload_wanted(environ: os._Environ | dict, engine_dir: Path = ENGINE_DIR) -> bool:
    """Whether this process must be re-executed with the C++ runtime preloaded."""
    if environ.get(_DONE_MARK) or CXX_RUNTIME in environ.get("LD_PRELOAD", "").replace(":", " ").split():
        return False
    forced = environ.get("LLAMACY_PRELOAD_CXX", "")
    if forced in ("0", "1"):
        return forced == "1"
    return engine_has_gpu_backend(engine_dir)


def reexec_with_cxx_runtime() -> None:
    """Replace this process with the same command line and ``LD_PRELOAD`` naming libstdc++
    (same pid: a service manager sees nothing). Returns only when nothing is to be done."""
    if not preload_wanted(os.environ):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [CXX_RUNTIME, env.get("LD_PRELOAD", "")]))
    env[_DONE_MARK] = "1"   # never loop, even if the loader ignored the preload
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
