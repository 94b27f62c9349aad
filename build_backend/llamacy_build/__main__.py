"""``python -m llamacy_build`` (with ``build_backend`` on sys.path): build or find the engine.

Prints the engine prefix for the current ``CMAKE_ARGS`` (building it first if needed), e.g. to
rebuild the extensions in place during development:

    LLAMACY_ENGINE_PREFIX=$(PYTHONPATH=build_backend python -m llamacy_build) \\
        python setup.py build_ext --inplace
"""
from __future__ import annotations

import sys

from llamacy_build.engine import ensure_engine


def main() -> int:
    print(ensure_engine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
