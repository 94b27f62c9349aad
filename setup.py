"""Build llamacy's Cython engine bindings against the pinned libllama build.

The engine comes from llama-cpp-python (see pyproject's build requirements and
third_party/ggml/PIN): its install provides the real headers in ``<site-packages>/include``
and the shared libraries in ``<site-packages>/llama_cpp/lib``. We compile against those
headers, link against those libraries, and copy the libraries into ``llamacy/_engine`` with
an ``$ORIGIN``-relative rpath, so an installed llamacy (or a wheel) needs no llama-cpp-python.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ENGINE_MODULES = ["model", "context", "sampling", "generation"]


def engine_dirs() -> tuple[str, str]:
    """(include dir, library dir) of the installed llama-cpp-python engine build."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama-cpp-python==0.3.36 must be installed in the build environment")
    pkg_dir = list(spec.submodule_search_locations)[0]
    include_dir = os.path.join(os.path.dirname(pkg_dir), "include")
    lib_dir = os.path.join(pkg_dir, "lib")
    if not os.path.isfile(os.path.join(include_dir, "llama.h")):
        raise RuntimeError(f"llama.h not found in {include_dir}")
    return include_dir, lib_dir


def engine_libraries(lib_dir: str) -> list[str]:
    """The engine's shared libraries under their SONAME (libX.so.<major>)."""
    return sorted(p for p in glob.glob(os.path.join(lib_dir, "lib*.so.*"))
                  if re.fullmatch(r"lib[\w.-]+?\.so\.\d+", os.path.basename(p)))


class BuildExtWithEngine(build_ext):
    """build_ext that also copies the engine's shared libraries into llamacy/_engine."""

    def run(self) -> None:
        super().run()
        _, lib_dir = engine_dirs()
        targets = [os.path.join(self.build_lib, "llamacy", "_engine")]
        if self.inplace:
            targets.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacy", "_engine"))
        for target in targets:
            os.makedirs(target, exist_ok=True)
            for lib in engine_libraries(lib_dir):
                shutil.copy2(os.path.realpath(lib), os.path.join(target, os.path.basename(lib)))


class BuildPyWithWebui(build_py):
    """build_py that also ships the repository's webui/ as llamacy/webui (the default --path)."""

    def run(self) -> None:
        super().run()
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webui")
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(self.build_lib, "llamacy", "webui"), dirs_exist_ok=True)


include_dir, lib_dir = engine_dirs()
extensions = [
    Extension(
        f"llamacy.engine.{name}",
        [f"llamacy/engine/{name}.pyx"],
        include_dirs=[include_dir, "."],
        library_dirs=[lib_dir],
        libraries=["llama", "ggml", "ggml-base"],
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
