"""Loadable backends: every CPU variant ships, the best one for this CPU is loaded, the baseline
variant is plain x86-64 (no AVX) and alone still loads and serves the default model."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import llamacy
from llamacy.engine import backends
from llamacy.engine.model import init_backend

PKG = Path(llamacy.__file__).resolve().parent
ENGINE = PKG / "_engine"
# VEX/EVEX-encoded instructions (AVX, AVX2, FMA, F16C, AVX-512 all are) start with "v" in
# objdump's AT&T syntax; AVX registers are ymm/zmm, AVX-512 mask registers k0-k7.
AVX_MNEMONIC = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{2} )+\s*(v[a-z0-9]+)\s", re.M)
AVX_REGISTER = re.compile(r"%[yz]mm\d+|%k[0-7]\b")


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def avx_instructions(lib: Path) -> list[str]:
    """The AVX-family instructions objdump finds in ``lib``'s code."""
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is needed: the README's test command installs it"
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                          check=True, timeout=600).stdout
    found = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not re.match(r"\s*[0-9a-f]+:$", parts[0]):
            continue
        insn = parts[1].strip()
        if re.match(r"v[a-z]", insn) and not insn.startswith(("verr", "verw")) or AVX_REGISTER.search(insn):
            found.append(insn)
    return found


def test_every_x86_cpu_variant_and_rpc_ship_in_the_package():
    names = {p.name for p in ENGINE.iterdir()}
    variants = {m[1] for n in names if (m := re.fullmatch(r"libggml-cpu-(\w+)\.so", n))}
    assert {"x64", "sse42", "haswell", "skylakex", "icelake", "zen4", "alderlake", "sapphirerapids"} <= variants
    assert "libggml-rpc.so" in names
    assert "libggml-cpu.so.0" not in names      # no CPU backend built for the build machine


def test_the_best_variant_for_this_cpu_is_loaded():
    init_backend()
    info = backends.report()
    assert info["cpu_variant"] == backends.cpu_variant()
    assert (ENGINE / f"libggml-cpu-{info['cpu_variant']}.so").is_file()
    flags = cpu_flags()
    # the loaded variant uses only what this CPU has, and more than the baseline where it can
    feature_flag = {"SSE42": "sse4_2", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma",
                    "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni",
                    "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni"}
    for feat in info["cpu_features"]:
        if feat in feature_flag:
            assert feature_flag[feat] in flags, (feat, info)
    if "avx2" in flags:
        assert info["cpu_variant"] not in ("x64", "sse42", "sandybridge"), info
        assert "AVX2" in info["cpu_features"], info
    assert "CPU" in info["backends"] and "RPC" in info["backends"]
    assert any(d["type"] == "cpu" for d in info["devices"])


def test_baseline_variant_has_no_avx_instructions():
    assert avx_instructions(ENGINE / "libggml-cpu-x64.so") == []
    assert avx_instructions(ENGINE / "libggml-cpu-sse42.so") == []


def test_the_avx_check_finds_avx_where_it_is():
    found = avx_instructions(ENGINE / "libggml-cpu-haswell.so")
    assert any("ymm" in insn for insn in found), found[:20]
    found = avx_instructions(ENGINE / "libggml-cpu-skylakex.so")
    assert any("zmm" in insn for insn in found), found[:20]


@pytest.fixture(scope="module")
def baseline_only(tmp_path_factory) -> Path:
    """A copy of the installed package whose _engine holds only the baseline CPU variant, plus a
    libggml-cuda.so that cannot load here (it needs a library this machine lacks, as a real CUDA
    backend needs libcudart on a machine without CUDA)."""
    root = tmp_path_factory.mktemp("baseline")
    shutil.copytree(PKG, root / "llamacy", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    engine = root / "llamacy" / "_engine"
    for lib in engine.glob("libggml-cpu-*.so"):
        if lib.name != "libggml-cpu-x64.so":
            lib.unlink()
    build = tmp_path_factory.mktemp("fake-cuda")
    (build / "absent.c").write_text("int llamacy_test_absent(void) { return 1; }\n")
    (build / "cuda.c").write_text("int llamacy_test_absent(void);\nint ggml_backend_score(void) { return llamacy_test_absent(); }\n")
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(build / "libllamacy-test-absent.so"), str(build / "absent.c")],
                   check=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(engine / "libggml-cuda.so"), str(build / "cuda.c"),
                    f"-L{build}", "-lllamacy-test-absent"], check=True)
    return root


def test_baseline_variant_alone_loads_and_serves(server_factory, baseline_only):
    srv = server_factory("-c", "256", "-t", "1", "-ngl", "99", env={"PYTHONPATH": str(baseline_only)})
    engine = srv.get("/props").json()["engine"]
    assert engine["cpu_variant"] == "x64", engine
    assert not {"AVX", "AVX2", "AVX512"} & set(engine["cpu_features"]), engine
    r = srv.post("/completion", json={"prompt": "The capital of France is", "n_predict": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 8 and r.json()["content"].strip()
    log = srv.log()
    assert re.search(r"engine: backends .*CPU variant x64", log), log[-3000:]
    # the GPU backend that cannot load here is skipped with its reason, and -ngl falls back to the CPU
    assert engine["skipped"] == [{"backend": "cuda", "reason": engine["skipped"][0]["reason"]}], engine
    assert "libllamacy-test-absent.so: cannot open shared object file" in engine["skipped"][0]["reason"]
    assert re.search(r"engine: cuda backend skipped: libllamacy-test-absent\.so: cannot open", log), log[-3000:]
    assert re.search(r"WARNING .*-ngl 99: no GPU device", log), log[-3000:]
