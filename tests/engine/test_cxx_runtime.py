"""The C++ runtime sits in the global symbol scope once the engine is up, so a backend library
exporting its own copies of libstdc++ symbols (the CUDA backend does) cannot capture the
engine's calls into libstdc++ (that crashed every model load on a GPU machine)."""
from __future__ import annotations

import subprocess
import sys


def test_libstdcxx_is_global_after_init_backend():
    code = """
import ctypes
libc_scope = ctypes.CDLL(None)
def visible():
    try:
        libc_scope._ZNSt6locale7classicEv   # std::locale::classic(), only libstdc++ defines it
        return True
    except AttributeError:
        return False
before = visible()
from llamacy.engine.model import Model, init_backend
init_backend()
print(before, visible())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
