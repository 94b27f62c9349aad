"""Logging: --log-format json|text, --log-disable, the access log, no secrets in the log."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

KEY = "secret-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def wait_for(server, needle: str, count: int = 1, timeout: float = 5.0) -> str:
    """The log once ``needle`` is in it ``count`` times (a request's line is written just after its response)."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if log.count(needle) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def json_lines(log: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        if line.strip():
            out.append(json.loads(line))   # every line of a json log is one JSON object
    return out


@pytest.fixture(scope="module")
def json_server(server_factory):
    """JSON logs, verbose (the most that gets logged), an API key."""
    return server_factory("-c", "256", "--log-format", "json", "-v", "--api-key", KEY)


def test_json_log_every_line_is_json(json_server):
    r = json_server.get("/props", headers=AUTH)
    assert r.status_code == 200
    records = json_lines(wait_for(json_server, '"path":"/props"'))
    for rec in records:
        assert {"timestamp", "level", "logger", "msg"} <= set(rec), rec
    access = [rec for rec in records if rec.get("path") == "/props"]
    assert access, records[-5:]
    rec = access[-1]
    assert rec["status"] == 200 and rec["method"] == "GET" and rec["remote"] == "127.0.0.1"
    assert isinstance(rec["elapsed_ms"], (int, float)) and rec["elapsed_ms"] >= 0
    assert rec["level"] == "INFO"


def test_json_log_error_status(json_server):
    r = json_server.post("/completion", data=b"{not json", headers=AUTH)
    assert r.status_code == 400
    records = json_lines(wait_for(json_server, '"status":400'))
    bad = [rec for rec in records if rec.get("path") == "/completion" and rec.get("status") == 400]
    assert bad and bad[-1]["level"] == "WARNING"


def test_api_key_never_logged(json_server):
    n_props = json_server.log().count('"path":"/props"')
    assert json_server.get("/props").status_code == 401
    assert json_server.get("/props", headers={"Authorization": "Bearer wrong-" + KEY}).status_code == 401
    assert json_server.get(f"/props?api_key={KEY}").status_code == 401
    r = json_server.post("/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0},
                         headers={**AUTH, "X-Api-Key": KEY})
    assert r.status_code == 200
    r = json_server.post("/completion", json={"prompt": "Hello", "n_predict": 2, "stream": True},
                         headers=AUTH, stream=True)
    assert r.status_code == 200 and r.content
    assert json_server.get(f"/props?api_key={KEY}", headers=AUTH).status_code == 200
    log = wait_for(json_server, '"path":"/props"', n_props + 4)
    assert log.count('"path":"/props"') == n_props + 4
    assert '"status":401' in log                        # the refused requests are logged...
    assert KEY not in log                               # ...but no key, header or query string is
    assert "api_key" not in log and "Authorization" not in log


def test_engine_stderr_lines_are_json_too(json_server):
    r = json_server.post("/completion", json={"prompt": "x", "grammar": "root ::= ("}, headers=AUTH)
    assert r.status_code == 400
    json_lines(wait_for(json_server, "failed to parse grammar"))


def test_text_log_has_request_line(server_factory):
    srv = server_factory("-c", "256", "--log-format", "text")
    assert srv.get("/props").status_code == 200
    assert srv.get("/no/such/file.txt").status_code == 404
    log = wait_for(srv, "GET /props 200")
    lines = [line for line in log.splitlines() if "GET /props 200" in line]
    assert lines and "llamacy.access" in lines[0] and "127.0.0.1" in lines[0]
    assert not log.lstrip().startswith("{")


def test_log_disable_writes_no_request_lines(server_factory):
    srv = server_factory("-c", "256", "--log-disable")
    for _ in range(3):
        assert srv.get("/props").status_code == 200
    assert srv.get("/nothing-here").status_code == 404
    time.sleep(0.3)
    log = srv.log()
    assert "/props" not in log and "/nothing-here" not in log
    assert "llamacy.access" not in log


def test_verbose_logs_request_prompt_response_and_engine_info(json_server):
    body = {"prompt": "Verbose marker prompt", "n_predict": 3, "temperature": 0}
    r = json_server.post("/completion", json=body, headers=AUTH)
    assert r.status_code == 200
    content = r.json()["content"]
    records = json_lines(wait_for(json_server, '"path":"/completion"'))
    msgs = [rec["msg"] for rec in records]
    requests_ = [m for m in msgs if m.startswith("request POST /completion") and "Verbose marker prompt" in m]
    assert requests_ and json.loads(requests_[-1].split(": ", 1)[1]) == body
    prompts = [m for m in msgs if m.startswith("completion request: ") and "prompt tokens: [" in m
               and "' marker'" in m]
    assert prompts, msgs[-10:]
    responses = [m for m in msgs if m.startswith("response POST /completion: ")]
    assert responses and json.loads(responses[-1].split(": ", 1)[1])["content"] == content
    engine_info = [rec for rec in records if rec["logger"] == "llamacy.engine.llama" and rec["level"] == "INFO"]
    assert any("llama_model_loader" in rec["msg"] or "print_info" in rec["msg"] for rec in engine_info)


def test_without_verbose_no_bodies_or_engine_info(server_factory):
    srv = server_factory("-c", "256", "--log-format", "json")
    r = srv.post("/completion", json={"prompt": "Quiet marker prompt", "n_predict": 2})
    assert r.status_code == 200
    log = wait_for(srv, '"path":"/completion"')
    assert "Quiet marker prompt" not in log
    assert not [rec for rec in json_lines(log) if rec["logger"] == "llamacy.engine.llama" and rec["level"] == "INFO"]


def test_log_file_gets_the_same_lines(server_factory, tmp_path):
    path = tmp_path / "server.log"
    srv = server_factory("-c", "256", "--log-format", "json", "--log-file", str(path))
    assert srv.get("/props").status_code == 200
    wait_for(srv, '"path":"/props"')
    lines = json_lines(path.read_text())
    assert any(rec.get("path") == "/props" and rec["status"] == 200 for rec in lines)
    assert any("server is ready" in rec["msg"] for rec in lines)


def test_log_file_in_a_missing_directory_fails_start_up(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llamacy", "--log-file", str(tmp_path / "no" / "x.log")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot open --log-file" in proc.stderr
