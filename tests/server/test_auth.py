"""API keys: --api-key (repeatable) and --api-key-file; what needs a key and what stays open."""
from __future__ import annotations

import pytest
import requests

K1, K2, K3 = "k1-alpha-4f9c", "k2-bravo-8e21", "k3-from-file-77d0"
INVALID = {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"\n{K3}\r\n\n")
    return server_factory("-c", "512", "-t", "1", "--api-key", K1, "--api-key", K2, "--api-key-file", str(key_file))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def call(server, method: str, path: str, headers: dict | None = None, json=None) -> requests.Response:
    return requests.request(method, server.url + path, headers=headers or {}, json=json, timeout=60)


PROTECTED = [
    ("GET", "/props", None),
    ("GET", "/slots", None),
    ("POST", "/tokenize", {"content": "hi"}),
    ("POST", "/detokenize", {"tokens": [19556]}),
    ("POST", "/completion", {"prompt": "Hi", "n_predict": 2}),
    ("POST", "/slots/0?action=erase", None),
]


@pytest.mark.parametrize("key", [K1, K2, K3], ids=["api-key-1", "api-key-2", "api-key-file"])
def test_each_key_works(server, key):
    r = call(server, "POST", "/completion", bearer(key), {"prompt": "Hi", "n_predict": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 2
    assert call(server, "GET", "/props", bearer(key)).status_code == 200
    assert call(server, "POST", "/tokenize", bearer(key), {"content": "hi"}).json()["tokens"]


def test_x_api_key_header_works(server):
    """Anthropic's clients send the key as X-Api-Key."""
    r = call(server, "POST", "/completion", {"X-Api-Key": K2}, {"prompt": "Hi", "n_predict": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert call(server, "GET", "/props", {"x-api-key": K3}).status_code == 200


@pytest.mark.parametrize("method,path,body", [(m, p, b) for m, p, b in PROTECTED if p != "/slots/0?action=erase"],
                         ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("headers", [
    {},
    bearer("wrong-key"),
    bearer(""),
    {"Authorization": K1},                    # the key without the Bearer scheme
    {"Authorization": f"Basic {K1}"},
    bearer(K1 + "x"),
    bearer(K1[:-1]),
    {"X-Api-Key": "wrong-key"},
    {"X-Api-Key": K1 + "x"},
], ids=["missing", "wrong", "empty", "no-scheme", "basic", "longer", "prefix", "x-api-key-wrong", "x-api-key-longer"])
def test_missing_or_wrong_key_is_401(server, method, path, body, headers):
    r = call(server, method, path, headers, body)
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == INVALID


def test_unauthorized_slot_action_is_401(server):
    r = call(server, "POST", "/slots/0?action=erase")
    assert r.status_code == 401 and r.json() == INVALID


def test_unauthorized_stream_is_401_before_streaming(server):
    r = call(server, "POST", "/completion", bearer("nope"), {"prompt": "Hi", "n_predict": 2, "stream": True})
    assert r.status_code == 401 and r.json() == INVALID


def test_health_is_open(server):
    """Liveness probes need no key (as llama.cpp: /health is public)."""
    for path in ("/health", "/v1/health"):
        r = call(server, "GET", path)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    # a wrong key does not hurt either
    assert call(server, "GET", "/health", bearer("wrong")).status_code == 200


def test_static_web_ui_is_open(server):
    """The web UI's files are public (the page asks for the key and sends it with API calls)."""
    r = call(server, "GET", "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    r = call(server, "GET", "/completion.js")
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/completion", "/props", "/tokenize", "/slots"])
def test_options_preflight_without_key(server, path):
    r = call(server, "OPTIONS", path, {
        "Origin": "http://example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers.get("Access-Control-Allow-Origin") == "http://example.com"
    assert r.headers.get("Access-Control-Allow-Headers") == "*"
    assert r.headers.get("Access-Control-Allow-Methods") == "GET, POST, DELETE, OPTIONS"


def test_cors_header_on_authorized_and_rejected_responses(server):
    ok = call(server, "GET", "/props", {**bearer(K1), "Origin": "http://example.com"})
    bad = call(server, "GET", "/props", {"Origin": "http://example.com"})
    assert ok.headers.get("Access-Control-Allow-Origin") and bad.headers.get("Access-Control-Allow-Origin")


def test_keys_never_in_log(server):
    log = server.log()
    for key in (K1, K2, K3):
        assert key not in log
