"""A process whose engine holds a GPU backend restarts itself with libstdc++ preloaded (without
it, every model load segfaulted on the GPU machine); forced here with LLAMACY_PRELOAD_CXX=1,
since this machine's engine has no GPU backend."""
from __future__ import annotations

from pathlib import Path

from llamacy.cxx_runtime import preload_wanted
from helpers import ServerProcess


def _environ(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_preload_wanted_follows_the_engine_and_the_override(tmp_path):
    assert not preload_wanted({}, tmp_path)
    (tmp_path / "libggml-cuda.so").write_bytes(b"")
    assert preload_wanted({}, tmp_path)
    assert not preload_wanted({"LLAMACY_PRELOAD_CXX": "0"}, tmp_path)
    assert not preload_wanted({"LD_PRELOAD": "libstdc++.so.6"}, tmp_path)
    assert not preload_wanted({"LLAMACY_CXX_PRELOADED": "1", "LLAMACY_PRELOAD_CXX": "1"}, tmp_path)
    assert preload_wanted({"LLAMACY_PRELOAD_CXX": "1", "LD_PRELOAD": "libfoo.so"}, tmp_path)


def test_forced_preload_restarts_the_server_in_place_and_it_serves():
    srv = ServerProcess(env={"LLAMACY_PRELOAD_CXX": "1", "LD_PRELOAD": ""})
    try:
        env = _environ(srv.proc.pid)
        assert env["LD_PRELOAD"].split() == ["libstdc++.so.6"]
        assert env["LLAMACY_CXX_PRELOADED"] == "1"
        r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 4})
        assert r.status_code == 200
        assert r.json()["tokens_predicted"] == 4
    finally:
        assert srv.stop() in (0, -15)


def test_without_a_gpu_backend_nothing_is_preloaded():
    srv = ServerProcess()
    try:
        env = _environ(srv.proc.pid)
        assert "LLAMACY_CXX_PRELOADED" not in env
        assert "libstdc++" not in env.get("LD_PRELOAD", "")
    finally:
        srv.stop()
