"""Build llamacy's Cython engine bindings against the engine built by the build backend.

The engine (libllama, libggml, the loadable ggml backends) is compiled by llamacy's PEP 517
backend (``build_backend/llamacy_build``) before setuptools runs this file; the backend puts
its install prefix in ``LLAMACY_ENGINE_PREFIX``. Here we only compile the Cython modules
against that prefix's headers, link them to its libraries, and copy the libraries and every
backend module into ``llamacy/_engine`` (``$ORIGIN``-relative rpath), so an installed llamacy
(or a wheel) stands alone. This file runs no other process.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ENGINE_MODULES = ["model", "context", "custom_samplers", "sampler_core", "sampling", "device_sampling", "step_plan", "step_outputs", "generation", "backends", "multimodal"]
# linked by the extensions (under their SONAME); every libggml-<backend>.so beside them is a
# backend module ggml loads at run time (CPU variants, RPC, CUDA).
LINKED_LIBS = ("libllama.so.0", "libggml.so.0", "libggml-base.so.0", "libmtmd.so.0")


def engine_prefix() -> Path:
    """The engine install prefix (include/, lib/) chosen by the build backend."""
    prefix = os.environ.get("LLAMACY_ENGINE_PREFIX")
    if not prefix:
        raise RuntimeError(
            "LLAMACY_ENGINE_PREFIX is not set: build llamacy with pip (its build backend builds the "
            "engine), or for an in-place build: LLAMACY_ENGINE_PREFIX=$(PYTHONPATH=build_backend "
            "python -m llamacy_build) python setup.py build_ext --inplace")
    path = Path(prefix)
    if not (path / "include" / "llama.h").is_file():
        raise RuntimeError(f"{path} is not an engine prefix (no include/llama.h)")
    return path


def engine_files(prefix: Path) -> list[Path]:
    lib = prefix / "lib"
    modules = sorted(p for p in lib.glob("libggml-*.so") if p.name != "libggml-base.so")
    return [lib / name for name in LINKED_LIBS] + modules


class BuildExtWithEngine(build_ext):
    """build_ext against the engine prefix; also copies its libraries into llamacy/_engine."""

    def run(self) -> None:
        prefix = engine_prefix()
        for ext in self.extensions:
            ext.include_dirs.append(str(prefix / "include"))
            ext.library_dirs.append(str(prefix / "lib"))
        super().run()
        targets = [Path(self.build_lib, "llamacy", "_engine")]
        if self.inplace:
            targets.append(ROOT / "llamacy" / "_engine")
        for target in targets:
            shutil.rmtree(target, ignore_errors=True)    # no backend of another engine build left behind
            target.mkdir(parents=True)
            for lib in engine_files(prefix):
                shutil.copy2(lib.resolve(), target / lib.name)


class BuildPyWithWebui(build_py):
    """build_py that also ships the repository's webui/ as llamacy/webui (the default --path)."""

    def run(self) -> None:
        super().run()
        src = ROOT / "webui"
        if src.is_dir():
            shutil.copytree(src, Path(self.build_lib, "llamacy", "webui"), dirs_exist_ok=True)


extensions = [
    Extension(
        f"llamacy.engine.{name}",
        [f"llamacy/engine/{name}.pyx"],
        include_dirs=["."],
        libraries=["llama", "ggml", "ggml-base"] + (["mtmd"] if name == "multimodal" else []),
        runtime_library_dirs=["$ORIGIN/../_engine"],
        extra_compile_args=["-O3", "-fopenmp"],   # OpenMP: samplers of a step run in parallel
        extra_link_args=["-fopenmp"],
    )
    for name in ENGINE_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "embedsignature": True},
        include_path=["."],
    ),
    cmdclass={"build_ext": BuildExtWithEngine, "build_py": BuildPyWithWebui},
)
