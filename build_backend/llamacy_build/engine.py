"""The engine build: llama.cpp from the pinned llama-cpp-python sdist, built once per configuration.

The engine (libllama, libggml, the ggml backends) is compiled with CMake from the
``vendor/llama.cpp`` tree of the ``llama-cpp-python`` sdist named in ``third_party/ggml/PIN``
(downloaded with pip, checked against the pinned SHA-256). The result is installed into a
cache directory keyed on the engine version and the exact CMake options, so every later
install on the machine with the same options (a re-install, CI's fresh clone, another venv)
reuses it, and changing the options (``CMAKE_ARGS``) builds a new one instead of silently
reusing the old (the trap of pip's wheel cache, which keys on the version alone).

Layout of one cache entry ``<cache>/<version>-<key>/``::

    lib/        libllama.so.0, libggml.so.0, libggml-base.so.0 (linked by llamacy's extensions)
                and the loadable backends libggml-cpu-<variant>.so, libggml-rpc.so, [libggml-cuda.so]
    include/    the engine's C headers (llama.h, ggml*.h) the .pxd files extern
    engine.json what was built: version, sdist hash, CMake options, build seconds
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN_FILE = ROOT / "third_party" / "ggml" / "PIN"

# Always on: the loader in llamacy needs shared libraries and loadable backends, each library
# finding its siblings beside it ($ORIGIN) wherever the package is installed.
REQUIRED_ARGS = (
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN",
)
# The default configuration: every x86-64/ARM CPU variant (picked at run time), ggml RPC,
# and nothing of llama.cpp that llamacy does not load (tools, tests, common, HTTP clients).
DEFAULT_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CPU_ALL_VARIANTS=ON",
    "-DGGML_RPC=ON",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    # libmtmd (images through a multimodal projector) alone, without the rest of tools/; no video
    # (it would spawn ffmpeg from the server)
    "-DLLAMA_BUILD_MTMD=ON",
    "-DMTMD_VIDEO=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DCMAKE_INSTALL_LIBDIR=lib",
    "-DCMAKE_INSTALL_BINDIR=lib",     # the loadable backends land beside the libraries
)
LINKED_LIBS = ("libllama.so.0", "libggml.so.0", "libggml-base.so.0", "libmtmd.so.0")


@dataclass(frozen=True)
class Pin:
    """The pinned engine: ``llama-cpp-python==VERSION`` and its sdist's SHA-256."""

    requirement: str
    version: str
    sha256: str

    @property
    def sdist_name(self) -> str:
        return f"llama_cpp_python-{self.version}.tar.gz"


def read_pin(path: Path = PIN_FILE) -> Pin:
    fields = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            fields["requirement"] = line
            fields["version"] = line.split("==", 1)[1].strip()
        elif line.startswith("sha256:"):
            fields["sha256"] = line.split(":", 1)[1].strip()
    return Pin(**fields)


def cache_root() -> Path:
    """``$LLAMACY_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/llamacy/engine`` (~/.cache/llamacy/engine)."""
    env = os.environ.get("LLAMACY_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "llamacy" / "engine"


def cmake_args(extra: str | None = None) -> list[str]:
    """The engine's CMake options: the defaults, then ``CMAKE_ARGS`` (e.g. ``-DGGML_CUDA=ON``),
    then the two the loader depends on. Later options win in CMake."""
    if extra is None:
        extra = os.environ.get("CMAKE_ARGS", "")
    return [*DEFAULT_ARGS, *shlex.split(extra), *REQUIRED_ARGS]


def source_override() -> Path | None:
    """``$LLAMACY_ENGINE_SOURCE``: an unpacked llama.cpp tree to build instead of the sdist's
    (for machines that reach no index, e.g. a trimmed copy of the pinned sdist's vendor/llama.cpp).
    It is not hash-checked; its builds are cached under their own key."""
    src = os.environ.get("LLAMACY_ENGINE_SOURCE")
    if not src:
        return None
    path = Path(src).resolve()
    if not (path / "CMakeLists.txt").is_file() or not (path / "include" / "llama.h").is_file():
        raise RuntimeError(f"LLAMACY_ENGINE_SOURCE={src} is not a llama.cpp source tree")
    return path


def config_key(pin: Pin, args: list[str]) -> str:
    """What identifies a build: the sdist's hash (or the source tree given instead), the options,
    the compilers named in the environment."""
    src = source_override()
    blob = json.dumps({"sdist": pin.sha256 if src is None else f"source:{src}", "args": args,
                       "cc": os.environ.get("CC", ""), "cxx": os.environ.get("CXX", ""),
                       "cudacxx": os.environ.get("CUDACXX", "")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _log(msg: str) -> None:
    print(f"[llamacy engine] {msg}", file=sys.stderr, flush=True)


def fetch_sdist(pin: Pin, root: Path) -> Path:
    """The pinned sdist: ``$LLAMACY_ENGINE_SDIST`` (offline builds), the cached copy, or pip download."""
    given = os.environ.get("LLAMACY_ENGINE_SDIST")
    candidates = [Path(given)] if given else []
    cached = root / "src" / pin.sdist_name
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            digest = _sha256(path)
            if digest == pin.sha256:
                return path
            if path == cached:
                path.unlink()
            else:
                raise RuntimeError(f"{path}: SHA-256 {digest} is not the pinned {pin.sha256}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        _log(f"downloading the {pin.requirement} sdist with pip")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--dest", tmp, pin.requirement], check=True)
        got = Path(tmp) / pin.sdist_name
        if not got.is_file():
            raise RuntimeError(f"pip download gave no {pin.sdist_name}")
        digest = _sha256(got)
        if digest != pin.sha256:
            raise RuntimeError(f"downloaded {pin.sdist_name} has SHA-256 {digest}, pinned {pin.sha256}")
        os.replace(got, cached)
    return cached


def _extract_engine_tree(sdist: Path, dest: Path) -> Path:
    """Unpack only ``vendor/llama.cpp`` of the sdist; returns that directory."""
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/", 1)[0]
        prefix = f"{top}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kw)
    return dest / top / "vendor" / "llama.cpp"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cmake() -> str:
    exe = shutil.which("cmake")
    if exe is None:
        raise RuntimeError("CMake is needed to build the engine (apt-get install cmake, or pip install cmake)")
    return exe


def ensure_engine(extra_args: str | None = None) -> Path:
    """The engine prefix for this configuration, built first if no cached build exists."""
    pin = read_pin()
    args = cmake_args(extra_args)
    root = cache_root()
    prefix = root / f"{pin.version}-{config_key(pin, args)}"
    if (prefix / "engine.json").is_file():
        return prefix
    with _locked(root / f".{prefix.name}.lock"):
        if (prefix / "engine.json").is_file():      # built by another install meanwhile
            return prefix
        build(pin, args, prefix)
    return prefix


def build(pin: Pin, args: list[str], prefix: Path) -> None:
    """Configure, compile and install the engine into ``prefix`` (atomically: a temp dir, then rename)."""
    cmake = _cmake()
    src = source_override()
    sdist = fetch_sdist(pin, prefix.parent) if src is None else None
    work = prefix.parent / f"{prefix.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    _log(f"building the engine ({pin.requirement if src is None else src}) into {prefix}; options: {' '.join(args)}")
    if src is None:
        src = _extract_engine_tree(sdist, work / "src")
    stage = work / "install"
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    subprocess.run([cmake, "-S", str(src), "-B", str(work / "build"), f"-DCMAKE_INSTALL_PREFIX={stage}", *args],
                   check=True)
    subprocess.run([cmake, "--build", str(work / "build"), "--parallel", jobs], check=True)
    subprocess.run([cmake, "--install", str(work / "build")], check=True)
    missing = [name for name in LINKED_LIBS if not (stage / "lib" / name).exists()]
    if missing:
        raise RuntimeError(f"engine build did not install {missing}")
    seconds = time.monotonic() - t0
    record = {"requirement": pin.requirement, "sdist_sha256": pin.sha256 if sdist else None,
              "source": str(src) if sdist is None else None, "cmake_args": args,
              "build_seconds": round(seconds, 1)}
    (stage / "engine.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(prefix, ignore_errors=True)
    os.replace(stage, prefix)
    shutil.rmtree(work, ignore_errors=True)
    _log(f"engine built in {seconds:.0f} s")
