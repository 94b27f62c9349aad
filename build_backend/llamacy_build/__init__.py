"""llamacy's PEP 517 build backend: setuptools, with the engine built (or found) first.

pip calls ``build_wheel`` / ``build_editable``; before handing over to setuptools (which runs
setup.py), this builds the engine with CMake into the per-machine engine cache, or finds the
cached build for the same engine version and CMake options (``engine.py``), and tells
setup.py where it is through ``LLAMACY_ENGINE_PREFIX``. Every other hook is setuptools' own.

Why a backend hook and not setup.py: setup.py stays declarative (it runs no process), the
engine build keeps its own cache keyed on its options (pip's wheel cache would key on the
version only), and nothing of llama.cpp is built when only metadata or an sdist is asked for.
"""
from __future__ import annotations

import os
import shutil

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks we do not change)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

from llamacy_build.engine import ensure_engine


def _cmake_args(config_settings) -> str | None:
    """``-C cmake-args="..."`` (pip's --config-settings) wins over the CMAKE_ARGS environment variable."""
    if config_settings and config_settings.get("cmake-args") is not None:
        return str(config_settings["cmake-args"])
    return None


def _with_engine(config_settings) -> None:
    os.environ["LLAMACY_ENGINE_PREFIX"] = str(ensure_engine(_cmake_args(config_settings)))


def _extra_requires() -> list[str]:
    # CMake from PyPI only where the machine has none
    return [] if shutil.which("cmake") else ["cmake>=3.21"]


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _extra_requires()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _extra_requires()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _with_engine(config_settings)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _with_engine(config_settings)
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
