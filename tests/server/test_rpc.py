"""ggml RPC on loopback: `llamacy rpc-server` processes hold layers of a `llamacy --rpc` server.

Two RPC servers plus the local CPU give the same greedy output as a local run; a dead RPC
server fails start-up clearly; an RPC server killed mid-run makes the in-flight requests fail
with a 503 naming the cause (the engine cannot continue without the device) and the server
exit with code 70 for its supervisor to restart it, instead of hanging.
"""
from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from helpers import ServerProcess, free_port, wait_port_open
from llamacy.rpc_server import build_parser as rpc_parser

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The three primary colors are"
GREEDY = {"prompt": PROMPT, "n_predict": 24, "temperature": 0, "cache_prompt": False}


class RpcServer:
    """``python -m llamacy rpc-server`` on 127.0.0.1 and a free port."""

    def __init__(self, *args: str) -> None:
        import llamacy
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_file = tempfile.TemporaryFile()
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(llamacy.__file__)))
        self.proc = subprocess.Popen([sys.executable, "-m", "llamacy", "rpc-server", "--port", str(self.port),
                                      "-t", "1", *args], stdout=self.log_file, stderr=subprocess.STDOUT,
                                     cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": pkg_root})
        wait_port_open(self.port, self.proc)

    def log(self) -> str:
        self.log_file.seek(0)
        return self.log_file.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log_file.close()


@pytest.fixture(scope="module")
def rpc_pair():
    servers = [RpcServer(), RpcServer()]
    yield servers
    for s in servers:
        s.stop()


def start(server_factory, *args: str) -> ServerProcess:
    """A llamacy server; loading over RPC sends every weight through loopback: wait longer."""
    srv = server_factory(*args, wait=False)
    srv.wait_ready(300)
    return srv


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    import llamacy
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(llamacy.__file__)))
    return subprocess.run([sys.executable, "-m", "llamacy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": pkg_root})


def test_two_rpc_servers_and_the_local_cpu_match_a_local_run(server_factory, rpc_pair):
    local = start(server_factory, "-c", "256", "-t", "1")
    want = local.post("/completion", json=GREEDY)
    assert want.status_code == 200, want.text
    local.stop()
    # 30 layers: 20 offloaded, split evenly between the two RPC servers; 10 stay on this CPU
    split = start(server_factory, "-c", "256", "-t", "1", "--rpc", ",".join(s.endpoint for s in rpc_pair),
                           "-ngl", "20", "-ts", "1,1", "-v")
    engine = split.get("/props").json()["engine"]
    rpc_devices = [d for d in engine["devices"] if d["backend"].startswith("RPC")]
    assert sorted(d["description"] for d in rpc_devices) == sorted(s.endpoint for s in rpc_pair), engine
    got = split.post("/completion", json=GREEDY)
    assert got.status_code == 200, got.text
    assert got.json()["tokens_predicted"] == 24
    assert got.json()["content"] == want.json()["content"]
    log = split.log()
    for s in rpc_pair:
        assert f"RPC server {s.endpoint}: devices RPC" in log, log[-3000:]
        assert "Accepted client connection" in s.log()
    # the layers really went to the servers: the engine logs each device's weight buffer at load
    for s in rpc_pair:
        assert re.search(rf"RPC\d+\[{re.escape(s.endpoint)}\] model buffer size\s*=\s*[1-9]", log), log[-5000:]
    split.stop()        # an RPC server serves one client at a time: free them for the next test


def weight_buffers(log: str) -> dict[str, float]:
    """MiB of model weights per RPC endpoint, from the engine's load log (-v)."""
    return {ep: float(mib) for ep, mib in re.findall(r"RPC\d+\[([\d.:]+)\] model buffer size\s*=\s*([\d.]+) MiB", log)}


def test_tensor_split_and_main_device_reach_the_model(server_factory, rpc_pair):
    """-ts / -sm none -mg on two RPC devices: the weights land where the flags say."""
    a, b = (s.endpoint for s in rpc_pair)
    # -ts 1,0: every offloaded layer (and the output layer) on the first device, none on the second
    first_only = start(server_factory, "-c", "256", "-t", "1", "--rpc", f"{a},{b}", "-ngl", "99", "-ts", "1,0", "-v")
    buf = weight_buffers(first_only.log())
    first_only.stop()
    assert set(buf) == {a} and buf[a] > 50, buf
    second_only = start(server_factory, "-c", "256", "-t", "1", "--rpc", f"{a},{b}", "-ngl", "99", "-sm", "none",
                                 "-mg", "1", "-v")
    buf = weight_buffers(second_only.log())
    r = second_only.post("/completion", json=GREEDY)
    second_only.stop()
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 24
    assert set(buf) == {b}, buf


def test_a_busy_rpc_server_fails_start_up_clearly(server_factory):
    """An RPC server serves one client at a time: a second client gets a clear error, not a hang."""
    rpc = RpcServer()
    try:
        first = start(server_factory, "-c", "256", "-t", "1", "--rpc", rpc.endpoint)
        second = ServerProcess("-c", "256", "--rpc", rpc.endpoint, wait=False)
        try:
            assert second.proc.wait(120) == 1
            assert re.search(rf"failed to load model: RPC server {rpc.endpoint} accepted the connection but did "
                             r"not answer the handshake within \d+ s", second.log()), second.log()[-3000:]
        finally:
            second.stop()
        assert first.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200
        first.stop()
    finally:
        rpc.stop()


def test_a_dead_rpc_server_fails_start_up_clearly():
    port = free_port()      # nothing listens here
    srv = ServerProcess("-c", "256", "--rpc", f"127.0.0.1:{port}", wait=False)
    try:
        assert srv.proc.wait(60) == 1
        log = srv.log()
        assert re.search(rf"failed to load model: RPC server 127\.0\.0\.1:{port} is not reachable: .*refused", log), log
    finally:
        srv.stop()


@pytest.mark.parametrize("value,needle", [
    ("localhost", "host:port"), ("127.0.0.1:0", "host:port"), ("[::1]:50052", "host:port"),
    ("127.0.0.1:99999", "host:port"),
])
def test_bad_rpc_endpoints_are_usage_errors(value, needle):
    res = run_cli("--rpc", value)
    assert res.returncode == 2, res.stderr
    assert "--rpc" in res.stderr and needle in res.stderr and "Traceback" not in res.stderr


def test_rpc_server_killed_mid_run_fails_requests_with_503_and_exits_70():
    rpc = RpcServer()
    srv = ServerProcess("-c", "1024", "-np", "2", "-t", "1", "--rpc", rpc.endpoint, wait=False)   # every layer remote
    srv.wait_ready(300)
    results: dict = {}
    errors: list = []

    def non_streaming() -> None:
        try:
            r = requests.post(srv.url + "/completion", timeout=120,
                              json={"prompt": "Count to a thousand:", "n_predict": 400, "ignore_eos": True})
            results["status"], results["body"] = r.status_code, r.json()
        except BaseException as exc:      # re-raised in the test thread
            errors.append(exc)

    try:
        stream = requests.post(srv.url + "/completion", stream=True, timeout=120,
                               json={"prompt": "Once upon a time", "n_predict": 400, "ignore_eos": True, "stream": True})
        assert stream.status_code == 200
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))      # generation is under way
        assert b'"stop": false' in first or b'"stop":false' in first
        t = threading.Thread(target=non_streaming, daemon=True)
        t.start()
        while srv.get("/slots", timeout=10).json()[1]["state"] == 0 and t.is_alive():
            time.sleep(0.05)                                                     # until both slots are busy
        rpc.proc.kill()
        rpc.proc.wait(10)
        events = sse_events_from(lines)
        err = events[-1]
        assert "error" in err, events[-3:]
        assert err["error"]["code"] == 503 and err["error"]["type"] == "unavailable_error"
        assert "engine failed" in err["error"]["message"] and "RPC" in err["error"]["message"], err
        assert "ggml-rpc.cpp" not in err["error"]["message"]              # no engine source paths
        t.join(120)
        if errors:
            raise errors[0]
        assert results["status"] == 503, results
        assert "engine failed" in results["body"]["error"]["message"], results
        assert srv.proc.wait(30) == 70
        assert "engine failed" in srv.log()
    finally:
        srv.stop()
        rpc.stop()


def sse_events_from(lines) -> list[dict]:
    import json
    out = []
    for line in lines:
        if line.startswith(b"data: "):
            out.append(json.loads(line[6:]))
    return out


def test_rpc_server_warns_loudly_off_loopback_and_fails_clearly_when_it_cannot_bind():
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning is logged, then bind fails
    res = run_cli("rpc-server", "--host", "192.0.2.1", "--port", str(free_port()), "-t", "1")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "NO authentication" in out and "192.0.2.1" in out
    assert "RPC server could not start on 192.0.2.1" in out


def test_rpc_server_refuses_mem_with_the_reason():
    res = run_cli("rpc-server", "--mem", "2048")
    assert res.returncode == 2
    assert "--mem is not supported" in res.stderr and "-ts" in res.stderr


def test_rpc_server_cache_dir_receives_weights(tmp_path, server_factory):
    cache = tmp_path / "rpc-cache"
    rpc = RpcServer("--cache", str(cache))
    try:
        srv = start(server_factory, "-c", "256", "-t", "1", "--rpc", rpc.endpoint)
        assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200
        assert cache.is_dir() and oct(cache.stat().st_mode & 0o777) == "0o700"
        assert any(cache.iterdir()), "large weight tensors are cached by hash"
    finally:
        rpc.stop()


# --- tools/llamacy-rpc.service -------------------------------------------------------------

def read_unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#",))
    cp.optionxform = str
    cp.read_string((ROOT / "tools" / "llamacy-rpc.service").read_text())
    return cp


def test_rpc_unit_serves_loopback_as_a_dedicated_user_and_restarts():
    svc = read_unit()["Service"]
    assert svc["User"] == "llamacy" and svc["Restart"] in ("always", "on-failure")
    args = shlex.split(svc["ExecStart"].replace("\\\n", " "))
    assert args[:2] == ["/opt/llamacy/.venv/bin/llamacy", "rpc-server"]
    a = rpc_parser().parse_args(args[2:])                      # every flag is a real rpc-server flag
    assert a.host == "127.0.0.1" and a.cache.startswith("/var/cache/") and a.cache[len("/var/cache/"):] in \
        svc["CacheDirectory"].split()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": "", "ProtectHome": "yes"}.items():
        assert svc.get(key) == value, key
    text = (ROOT / "tools" / "llamacy-rpc.service").read_text()
    assert "no authentication" in text.lower()
