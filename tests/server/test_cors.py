"""CORS policy (--cors-origins, --cors-methods, --cors-headers, --no-cors-credentials) and the
opt-in /cors-proxy (--ui-mcp-proxy), through the real server; the proxy's target is a real HTTP
server on 127.0.0.1 that records what reached it."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

KEY = "sk-cors-test"


def preflight(server, origin: str):
    r = server.request("OPTIONS", "/completion", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization"})
    assert r.status_code == 200
    return r.headers


@pytest.fixture(scope="module")
def localhost_only(server_factory):
    return server_factory("-c", "256", "--cors-origins", "localhost")


@pytest.mark.parametrize("origin", ["http://localhost", "http://localhost:8080", "http://127.0.0.1",
                                    "https://127.0.0.1:3000", "http://[::1]", "http://[::1]:3000"])
def test_localhost_policy_reflects_local_origins(localhost_only, origin):
    assert preflight(localhost_only, origin)["Access-Control-Allow-Origin"] == origin
    r = localhost_only.get("/health", headers={"Origin": origin})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["http://web.mydomain.fr", "http://evil.com", "http://notlocalhost",
                                    "http://localhost.evil.com", "localhost", "http://[::1"])
def test_localhost_policy_names_no_other_origin(localhost_only, origin):
    assert "Access-Control-Allow-Origin" not in preflight(localhost_only, origin)
    r = localhost_only.get("/health", headers={"Origin": origin})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_default_reflects_any_origin(server_factory):
    srv = server_factory("-c", "256")
    headers = preflight(srv, "http://web.mydomain.fr")
    assert headers["Access-Control-Allow-Origin"] == "http://web.mydomain.fr"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "*"


def test_an_origin_list_methods_headers_and_no_credentials(server_factory):
    srv = server_factory("-c", "256", "--cors-origins", "https://app.example.com, http://localhost:5173",
                         "--cors-methods", "GET, POST", "--cors-headers", "Authorization, Content-Type",
                         "--no-cors-credentials")
    headers = preflight(srv, "https://app.example.com")
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert headers["Access-Control-Allow-Credentials"] == "false"
    assert preflight(srv, "http://localhost:5173")["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "Access-Control-Allow-Origin" not in preflight(srv, "http://localhost:5174")
    anyone = server_factory("-c", "256", "--no-cors-credentials")
    assert preflight(anyone, "http://web.mydomain.fr")["Access-Control-Allow-Origin"] == "*"


class _Target:
    """A real HTTP server on 127.0.0.1 recording each request's method, headers and body."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                             self.rfile.read(n)))
                status = 404 if self.path.startswith("/missing") else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "target=secret")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def target():
    t = _Target()
    yield t
    t.close()


@pytest.fixture(scope="module")
def proxy(server_factory):
    return server_factory("-c", "256", "--api-key", KEY, "--ui-mcp-proxy")


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_proxy_forwards_only_the_explicit_headers(proxy, target):
    r = proxy.get(f"/cors-proxy?url={target.url}/capture", headers={
        **AUTH, "Proxy-Authorization": "Basic secret", "X-Api-Key": KEY, "Cookie": "session=secret",
        "x-llama-server-proxy-header-accept": "application/json",
        "x-llama-server-proxy-header-authorization": "Bearer explicit"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert r.headers["Content-Type"] == "application/json"
    assert "Set-Cookie" not in r.headers
    method, path, headers, _ = target.seen[-1]
    assert (method, path) == ("GET", "/capture")
    assert headers["accept"] == "application/json" and headers["authorization"] == "Bearer explicit"
    for private in ("proxy-authorization", "x-api-key", "cookie"):
        assert private not in headers


def test_proxy_posts_the_body_and_passes_the_status_back(proxy, target):
    r = proxy.post(f"/cors-proxy?url={target.url}/mcp", data=b'{"jsonrpc": "2.0"}',
                   headers={**AUTH, "x-llama-server-proxy-header-content-type": "application/json"})
    assert r.status_code == 200
    assert target.seen[-1][0] == "POST" and target.seen[-1][3] == b'{"jsonrpc": "2.0"}'
    assert target.seen[-1][2]["content-type"] == "application/json"
    assert proxy.get(f"/cors-proxy?url={target.url}/missing", headers=AUTH).status_code == 404


@pytest.mark.parametrize("url,message", [
    ("", "'url' (the query parameter naming the target) is required"),
    ("file:///etc/passwd", "unsupported URL scheme in target URL: file"),
    ("http:///nohost", "invalid target URL: missing host"),
    ("http://user:pw@127.0.0.1/", "authentication in target URL is not supported"),
])
def test_proxy_bad_targets_are_400(proxy, url, message):
    r = proxy.get("/cors-proxy", params={"url": url} if url else None, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}


def test_proxy_unreachable_target_is_502_and_needs_the_key(proxy, target):
    r = proxy.get("/cors-proxy?url=http://127.0.0.1:1/", headers=AUTH)
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"
    assert proxy.get(f"/cors-proxy?url={target.url}/x").status_code == 401


def test_proxy_is_off_by_default(server_factory, target):
    srv = server_factory("-c", "256")
    for method in ("GET", "POST"):
        r = srv.request(method, f"/cors-proxy?url={target.url}/x")
        assert r.status_code == 403
        assert r.json() == {"error": {"code": 403, "message": "this feature is disabled", "type": "feature_disabled"}}
    assert srv.get("/props").json()["cors_proxy_enabled"] is False
