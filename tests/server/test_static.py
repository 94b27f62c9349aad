"""Static files: the built-in web UI at /, --path DIR instead, and no way out of the served directory."""
from __future__ import annotations

import http.client
import pathlib

import pytest

WEBUI = pathlib.Path(__file__).resolve().parents[2] / "webui"
SECRET = "top-secret-6c1e0b"
CUSTOM_INDEX = "<!doctype html><html><body><h1>custom front end 91ab</h1></body></html>\n"
CUSTOM_JS = "export const marker = 'custom completion.js 2f7d';\n"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """root/site (served with --path) beside root/site-private (must stay unreachable)."""
    root = tmp_path_factory.mktemp("static")
    site = root / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text(CUSTOM_INDEX)
    (site / "sub" / "page.html").write_text("<p>sub page</p>")
    private = root / "site-private"
    private.mkdir()
    (private / "secret.txt").write_text(SECRET)
    (root / "secret.txt").write_text(SECRET)
    return root


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "256", "-t", "1")


@pytest.fixture(scope="module")
def custom(server_factory, layout):
    return server_factory("-c", "256", "-t", "1", "--path", str(layout / "site"))


def raw_get(server, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (requests/urllib3 would normalise '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- the built-in web UI ---------------------------------------------------------------------


def test_index_is_the_web_ui(server):
    r = server.get("/", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.content == (WEBUI / "index.html").read_bytes()
    r2 = server.get("/index.html", timeout=10)
    assert r2.status_code == 200 and r2.content == r.content


def test_completion_js_is_javascript(server):
    r = server.get("/completion.js", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0].strip() == "text/javascript"
    assert r.content == (WEBUI / "completion.js").read_bytes()
    assert "export" in r.text and "llama" in r.text


def test_other_web_ui_assets(server):
    for name in sorted(p.name for p in WEBUI.iterdir() if p.is_file()):
        r = server.get("/" + name, timeout=10)
        assert r.status_code == 200, name
        if name.endswith(".css"):
            assert r.headers["Content-Type"].startswith("text/css")


def test_missing_file_is_404_json(server):
    r = server.get("/no-such-file.html", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


# --- --path DIR ---------------------------------------------------------------------------------


def test_path_serves_its_index(custom):
    r = custom.get("/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.text == CUSTOM_INDEX
    assert custom.get("/sub/page.html", timeout=10).text == "<p>sub page</p>"
    # the built-in UI's other files are not mixed in
    assert custom.get("/app.js", timeout=10).status_code == 404


def test_path_completion_js_falls_back_then_comes_from_dir(custom, layout):
    """The spec: with --path ./your-directory, pages import /completion.js; one in the directory wins."""
    r = custom.get("/completion.js", timeout=10)
    assert r.status_code == 200, "built-in /completion.js should be served when --path has none"
    assert r.content == (WEBUI / "completion.js").read_bytes()
    own = layout / "site" / "completion.js"
    own.write_text(CUSTOM_JS)
    try:
        r = custom.get("/completion.js", timeout=10)
        assert r.status_code == 200 and r.text == CUSTOM_JS
        assert r.headers["Content-Type"].split(";")[0].strip() == "text/javascript"
    finally:
        own.unlink()


# --- path traversal -----------------------------------------------------------------------------

TRAVERSALS = [
    "/../../../../etc/passwd",
    "/../secret.txt",
    "/../site-private/secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/site-private/secret.txt",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsite-private%2fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/..\\..\\secret.txt",
    "/..%5c..%5csecret.txt",
    "/%252e%252e/secret.txt",
    "/.%2e/secret.txt",
    "/etc/passwd%00.html",
]


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("which", ["server", "custom"])
def test_path_traversal_never_escapes(request, which, target):
    srv = request.getfixturevalue(which)
    status, body = raw_get(srv, target)
    assert status in (400, 403, 404), (status, body[:200])
    assert SECRET.encode() not in body and b"root:" not in body
