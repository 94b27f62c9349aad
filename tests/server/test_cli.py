"""The ``llamacy`` command line: every flag of the spec, grouped help, bad values, -ngl without a GPU."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

import llamacy
from llamacy.cli import build_parser, config_from_args

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC_NAME = "llama-server-2024-README.txt"
PKG_ROOT = str(pathlib.Path(llamacy.__file__).resolve().parent.parent)

# The flags of the spec's "Command line options" section (what spec_flags() collects from the
# spec's text, kept here so the test runs where the spec file is not at hand).
SPEC_FLAGS = {
    "--alias", "--api-key", "--api-key-file", "--batch-size", "--cache-type-k", "--cache-type-v",
    "--chat-template", "--cont-batching", "--ctx-size", "--defrag-thold", "--embeddings", "--flash-attn",
    "--grp-attn-n", "--grp-attn-w", "--hf-file", "--hf-repo", "--host", "--log-disable", "--log-format", "--lora",
    "--lora-base", "--main-gpu", "--metrics", "--mlock", "--mmproj", "--model", "--model-url", "--n-gpu-layers",
    "--n-predict", "--no-mmap", "--numa", "--parallel", "--path", "--pooling", "--port", "--rope-freq-base",
    "--rope-freq-scale", "--rope-scaling", "--slot-save-path", "--slots-endpoint-disable", "--spm-infill",
    "--ssl-cert-file", "--ssl-key-file", "--system-prompt-file", "--tensor-split", "--threads", "--threads-batch",
    "--threads-http", "--timeout", "--ubatch-size", "--verbose", "--yarn-attn-factor", "--yarn-beta-fast",
    "--yarn-beta-slow", "--yarn-ext-factor",
    "-a", "-b", "-c", "-cb", "-ctk", "-ctv", "-dt", "-fa", "-hff", "-hfr", "-m", "-mg", "-mu", "-n", "-ngl", "-np",
    "-spf", "-t", "-tb", "-to", "-ts", "-ub", "-v",
}
# Words the spec's flattened text glued or misspelt: "the --lora flag" lost its space, and
# "--api-keys" in the --api-key-file entry means the --api-key flag.
SPEC_TEXT_ARTIFACTS = {"--loraflag": "--lora", "--api-keys": "--api-key"}

LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")
SHORT_FLAG = re.compile(r"(?<![\w-])-[a-z]{1,3}\b")


def find_spec() -> pathlib.Path | None:
    candidates = [os.environ.get("LLAMACY_SPEC", ""), ROOT / "spec" / SPEC_NAME,
                  ROOT.parent / "shared" / "spec" / SPEC_NAME]
    for c in candidates:
        if c and pathlib.Path(c).is_file():
            return pathlib.Path(c)
    return None


def spec_flags(text: str) -> set[str]:
    section = text[text.index("Command line options:"):text.index("\nBuild\n")]
    flags = set(LONG_FLAG.findall(section)) | set(SHORT_FLAG.findall(section))
    return {SPEC_TEXT_ARTIFACTS.get(f, f) for f in flags}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamacy", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(pathlib.Path(PKG_ROOT).parent), env={**os.environ, "PYTHONPATH": PKG_ROOT})


@pytest.fixture(scope="module")
def help_text() -> str:
    res = run_cli("--help")
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def flags() -> set[str]:
    spec = find_spec()
    if spec is None:
        return set(SPEC_FLAGS)
    return spec_flags(spec.read_text(encoding="utf-8"))


def test_spec_flag_list_is_current():
    spec = find_spec()
    if spec is None:
        pytest.skip(f"{SPEC_NAME} not found (set LLAMACY_SPEC)")
    assert spec_flags(spec.read_text(encoding="utf-8")) == SPEC_FLAGS


def test_help_is_grouped(help_text):
    titles = re.findall(r"^(\w[\w ]*):$", help_text, flags=re.M)
    for group in ("general", "model", "context", "server", "logging"):
        assert group in titles, (group, titles)
    order = [titles.index(g) for g in ("general", "model", "context", "server", "logging")]
    assert order == sorted(order)


def test_help_lists_every_spec_flag(help_text, flags):
    body = help_text[help_text.index("\ngeneral:"):]       # the option listings, not the usage line
    documented = set(LONG_FLAG.findall(body)) | set(SHORT_FLAG.findall(body))
    missing = sorted(flags - documented)
    assert not missing, f"--help lacks {missing}"


def test_parser_accepts_every_spec_flag(flags):
    known = set(build_parser()._option_string_actions)
    assert not sorted(flags - known)


def test_spec_defaults():
    c = config_from_args([])
    assert (c.n_ctx, c.n_batch, c.n_ubatch, c.n_parallel, c.n_predict) == (512, 2048, 512, 1, -1)
    assert (c.hosts, c.port, c.timeout) == (("127.0.0.1",), 8080, 600)
    assert (c.grp_attn_n, c.grp_attn_w, c.defrag_thold) == (1, 512, -1.0)
    assert (c.cache_type_k, c.cache_type_v, c.flash_attn) == ("f16", "f16", False)
    assert (c.yarn_attn_factor, c.yarn_beta_slow, c.yarn_beta_fast) == (1.0, 1.0, 32.0)
    assert c.log_format == "json" and c.slots_endpoint and not c.metrics and not c.embeddings
    assert c.threads == (os.cpu_count() or 1) and c.api_keys == () and c.path is None


def test_gpu_and_rpc_flags_reach_the_config():
    c = config_from_args(["-ngl", "12", "-sm", "row", "-mg", "1", "-ts", "3,1", "--rpc", "10.0.0.2:50052,gpu-b:1"])
    assert (c.n_gpu_layers, c.split_mode, c.main_gpu, c.tensor_split) == (12, "row", 1, (3.0, 1.0))
    assert c.rpc_servers == ("10.0.0.2:50052", "gpu-b:1")
    assert config_from_args([]).n_gpu_layers == 0 and config_from_args([]).split_mode == "layer"
    assert config_from_args(["--rpc", "127.0.0.1:5"]).n_gpu_layers == 999    # --rpc alone offloads every layer


def test_api_keys_from_flags_and_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("k3\n\n  k4  \n")
    c = config_from_args(["--api-key", "k1", "--api-key", "k2", "--api-key-file", str(f)])
    assert set(c.api_keys) == {"k1", "k2", "k3", "k4"}


@pytest.mark.parametrize("args,needle", [
    (["-c", "abc"], "-c/--ctx-size"),
    (["--ctx-size", "1.5"], "--ctx-size"),
    (["-np", "two"], "-np/--parallel"),
    (["-np", "0"], "--parallel"),
    (["-b", "-3"], "--batch-size"),
    (["--port", "http"], "--port"),
    (["-ctk", "q3_k"], "-ctk/--cache-type-k"),
    (["--log-format", "xml"], "--log-format"),
    (["--rope-scaling", "cubic"], "--rope-scaling"),
    (["--numa", "everywhere"], "--numa"),
    (["-sm", "tensor"], "-sm/--split-mode"),
    (["-mg", "-1"], "--main-gpu"),
    (["--no-such-flag"], "--no-such-flag"),
    (["-c"], "-c/--ctx-size"),
    (["--ssl-key-file", "k.pem"], "--ssl-cert-file"),
    (["--api-key-file", "/nonexistent/keys.txt"], "--api-key-file"),
])
def test_bad_flag_value_exits_2(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "usage: llamacy" in res.stderr and "error:" in res.stderr
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_ngl_without_a_gpu_warns_and_serves(server_factory):
    from llamacy.engine.backends import gpu_devices
    from llamacy.engine.model import init_backend
    init_backend()
    if gpu_devices():
        pytest.skip("this machine has a GPU")
    srv = server_factory("-c", "256", "-t", "1", "-ngl", "99")
    assert srv.get("/health", timeout=10).json()["status"] == "ok"
    r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}, timeout=60)
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while not re.search(r"WARNING.*-ngl", srv.log()) and time.monotonic() < deadline:
        time.sleep(0.1)
    warnings = [line for line in srv.log().splitlines() if "WARNING" in line and "-ngl" in line]
    assert warnings, srv.log()[-2000:]
    assert "99" in warnings[0]


def test_unsupported_flags_are_accepted_with_a_warning(server_factory):
    srv = server_factory("-c", "256", "--threads-http", "4")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "--threads-http" not in srv.log():
        time.sleep(0.1)
    assert re.search(r"WARNING.*--threads-http", srv.log())
    # --mmproj is supported now (tests/server/test_multimodal.py); without it, images are a 400
    r = srv.post("/completion", json={"prompt": "x [img-1]", "image_data": [{"data": "AAAA", "id": 1}]})
    assert r.status_code == 400 and "does not accept images" in r.json()["error"]["message"]
