"""llamacy: llama.cpp's HTTP server, rebuilt in Python on libllama."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llamacy")
except PackageNotFoundError:   # a source tree that was never installed
    __version__ = "0+unknown"
