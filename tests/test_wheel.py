"""The package stands alone: the engine's libraries ship inside it, llama-cpp-python is not needed."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import llamacy
from llamacy.models import default_model_path

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(llamacy.__file__).resolve().parent


def test_engine_libraries_resolve_inside_the_package():
    engine = PKG / "_engine"
    assert (engine / "libllama.so.0").is_file()
    ext = next((PKG / "engine").glob("model*.so"))
    out = subprocess.run(["ldd", str(ext)], capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if "=>" in line}
    for lib in ("libllama.so.0", "libggml.so.0", "libggml-base.so.0"):
        assert lib in lines, out
        assert str(engine.resolve()) in os.path.realpath(lines[lib].split("=>")[1].split()[0]), lines[lib]


def test_installed_package_runs_without_llama_cpp_python():
    code = ("import importlib.util, llamacy.engine.model as m; "
            "assert importlib.util.find_spec('llama_cpp') is None, 'llama_cpp importable'; "
            f"print(m.Model({default_model_path()!r}).n_vocab)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.fail("llama-cpp-python is installed in the test environment; the package must not need it")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "49152"


def test_wheel_installs_and_serves_in_a_fresh_venv(tmp_path):
    """`pip wheel .` → a fresh venv → the engine loads the model (pip's cache makes this quick)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=1200)
    (wheel,) = wheels.glob("llamacy-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    code = ("import importlib.util; from llamacy.engine.model import Model; "
            "assert importlib.util.find_spec('llama_cpp') is None; "
            f"print(Model({default_model_path()!r}).desc)")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Q4_1" in out.stdout
    webui = subprocess.run([str(py), "-c", "import llamacy.server.static as s; print(s.default_webui_dir())"],
                           capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert Path(webui, "index.html").is_file() and Path(webui, "completion.js").is_file()
