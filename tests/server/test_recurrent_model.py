"""A model with a recurrent state instead of a KV cache (a tiny random Mamba written by
tools/make_test_gguf.py): its memory cannot drop the end of a sequence, so the loop never adds
throw-away tokens to it (not even on a GPU) and admits requests between runs. Served for real:
concurrent requests and reused prompt caches give the results each request gets alone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_in_threads
from llamacy.config import ServerConfig
from llamacy.engine.model import Model
from llamacy.models import default_model_path
from llamacy.engine.generation import DEVICE_OFF_AT, DEVICE_ON_AT, STABLE_OFF_AT, STREAM_MAX
from llamacy.engine.step_outputs import GPU_ROWS_PER_THREAD, ROWS_PER_THREAD
from llamacy.serving.admission import COMPACT_REUSE_MIN
from llamacy.server.state import DEVICE_GREEDY_SLOTS, DEVICE_TOP_K, loop_options

TOOLS = Path(__file__).resolve().parents[2] / "tools"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time there was"]


@pytest.fixture(scope="module")
def mamba(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("mamba") / "mamba.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--mamba"], check=True)
    return str(out)


@pytest.fixture(scope="module")
def server(server_factory, mamba):
    return server_factory("-m", mamba, "-c", "1024", "-np", "2", "-t", "1")


def complete(server, prompt: str, **kw) -> str:
    r = server.post("/completion", json={"prompt": prompt, "n_predict": 12, "temperature": 0, **kw}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["content"]


def test_the_models_say_whether_they_have_a_recurrent_state(mamba):
    for path, recurrent in ((mamba, True), (default_model_path(), False)):
        m = Model(path)
        try:
            assert m.has_recurrent_state is recurrent
        finally:
            m.close()


def test_the_loop_pads_only_an_attention_model_on_a_gpu():
    auto, on, off = ServerConfig(), ServerConfig(backend_sampling="on"), ServerConfig(backend_sampling="off")
    assert loop_options(auto, gpu=True, recurrent=False, projector=False) | {"stable_on_at": 0} == {
        "pad_gaps": True, "device_top_k": DEVICE_TOP_K, "device_auto": True, "stable_on_at": 0,
        "stable_off_at": STABLE_OFF_AT, "device_on_at": DEVICE_ON_AT, "device_off_at": DEVICE_OFF_AT,
        "stream_max": STREAM_MAX,
        "rows_per_thread": GPU_ROWS_PER_THREAD, "compact_reuse_min": COMPACT_REUSE_MIN, "warm_up": True,
        "gap_streamed": True, "device_greedy_slots": DEVICE_GREEDY_SLOTS, "device_one_copy": True}
    assert loop_options(auto, gpu=False, recurrent=False, projector=False)["rows_per_thread"] == ROWS_PER_THREAD
    assert loop_options(auto, gpu=True, recurrent=True, projector=False)["pad_gaps"] is False
    assert loop_options(auto, gpu=True, recurrent=False, projector=True)["pad_gaps"] is False
    assert loop_options(auto, gpu=True, recurrent=False, projector=True)["device_top_k"] == 0
    assert loop_options(auto, gpu=False, recurrent=False, projector=False)["pad_gaps"] is False
    assert not any(loop_options(auto, gpu=gpu, recurrent=recurrent, projector=projector)["warm_up"]
                   for gpu, recurrent, projector in [(False, False, False), (True, True, False), (True, False, True)])
    assert loop_options(auto, gpu=False, recurrent=False, projector=False)["device_top_k"] == 0
    assert loop_options(on, gpu=False, recurrent=False, projector=False)["device_top_k"] == DEVICE_TOP_K
    assert loop_options(on, gpu=False, recurrent=False, projector=False)["device_auto"] is False
    assert loop_options(off, gpu=True, recurrent=False, projector=False)["device_top_k"] == 0
    # the device greedy comes with backend sampling, not with a projector
    assert loop_options(on, gpu=False, recurrent=False, projector=False)["device_greedy_slots"] == DEVICE_GREEDY_SLOTS
    assert loop_options(off, gpu=True, recurrent=False, projector=False)["device_greedy_slots"] == 0
    assert loop_options(auto, gpu=False, recurrent=False, projector=False)["device_greedy_slots"] == 0
    assert loop_options(auto, gpu=True, recurrent=False, projector=True)["device_greedy_slots"] == 0


def test_concurrent_and_cached_requests_get_what_they_get_alone(server):
    alone = [complete(server, p) for p in PROMPTS]
    assert len(set(alone)) == 3
    got: dict = {}
    run_in_threads(lambda i: got.setdefault(i, complete(server, PROMPTS[i])), [(i,) for i in range(3)])
    assert [got[i] for i in range(3)] == alone
    # a prompt that extends a slot's cached one: the state is rebuilt or reused, never stale
    longer = PROMPTS[0] + alone[0]
    want = complete(server, longer)
    assert complete(server, longer, cache_prompt=True) == want
    assert complete(server, PROMPTS[0], cache_prompt=True) == alone[0]
