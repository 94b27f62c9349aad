"""-mu URL / -hfr REPO -hff FILE: download into the cache, resume with Range, reuse, clear errors.

A local http.server thread on 127.0.0.1 plays the model host (Range support written here).
The unit tests serve a small fake GGUF; the end-to-end test serves the real default model
to a real server started with ``-mu``.
"""
from __future__ import annotations

import http.server
import os
import re
import shutil
import threading

import pytest

from helpers import ServerProcess, free_port
from llamacy.config import ServerConfig
from llamacy.download import cache_path, resolve_model
from llamacy.errors import ModelLoadError
from llamacy.models import default_model_path

FAKE = b"GGUF" + bytes(range(256)) * 12000        # ~3 MB, a GGUF magic and recognisable bytes
CUT = 1_000_000


class Host(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = {"/model.gguf": FAKE, "/org/repo/resolve/main/model.gguf": FAKE,
                      "/norange/model.gguf": FAKE, "/cut-once/model.gguf": FAKE, "/cdn/model.gguf": FAKE,
                      "/twice/model.gguf": FAKE,
                      "/not-gguf.bin": b"<html>not a model</html>" * 100}
        self.real_model = default_model_path()
        self.requests: list[dict] = []
        self.cut_done = False
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def seen(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Host

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "authorization": self.headers.get("Authorization")})
        if self.path.startswith("/org/redirect/"):      # as huggingface.co/…/resolve/… does, to its CDN
            self.send_response(302)
            self.send_header("Location", "/cdn/model.gguf")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/real/model.gguf":
            with open(srv.real_model, "rb") as f:
                data = f.read()
        elif self.path in srv.files:
            data = srv.files[self.path]
        else:
            self.send_error(404, "Not Found")
            return
        size = len(data)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and not self.path.startswith("/norange/"):
            start = int(m.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        body = data[start:]
        if self.path.startswith("/cut-once/") and not srv.cut_done:
            srv.cut_done = True
            body = body[:CUT]                      # promise the whole file, drop the connection early
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture(scope="module")
def host():
    srv = Host()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("LLAMACY_CACHE", str(d))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return d


def test_nothing_to_download():
    assert resolve_model(ServerConfig()) is None
    assert resolve_model(ServerConfig(model="/some/local.gguf")) is None


def test_download_then_reuse_without_network(host, cache, capsys):
    url = host.url + "/model.gguf"
    path = resolve_model(ServerConfig(model_url=url))
    assert path == cache_path(url) and os.path.dirname(path) == str(cache)
    with open(path, "rb") as f:
        assert f.read() == FAKE
    assert sorted(os.listdir(cache)) == [os.path.basename(path), os.path.basename(path) + ".lock"]  # no .part
    assert "100.0%" in capsys.readouterr().err                    # progress on stderr
    n = len(host.requests)
    assert resolve_model(ServerConfig(model_url=url)) == path
    assert len(host.requests) == n                                 # reused: no request at all


def test_resume_after_a_dropped_connection(host, cache):
    url = host.url + "/cut-once/model.gguf"
    path = resolve_model(ServerConfig(model_url=url))
    with open(path, "rb") as f:
        assert f.read() == FAKE
    reqs = host.seen("/cut-once/model.gguf")
    assert [r["range"] for r in reqs] == [None, f"bytes={CUT}-"]


def test_resume_from_a_part_file_left_by_an_earlier_run(host, cache):
    url = host.url + "/model.gguf"
    part = cache_path(url) + ".part"
    os.makedirs(cache)
    with open(part, "wb") as f:
        f.write(FAKE[:12345])
    before = len(host.seen("/model.gguf"))
    path = resolve_model(ServerConfig(model_url=url))
    with open(path, "rb") as f:
        assert f.read() == FAKE
    assert [r["range"] for r in host.seen("/model.gguf")[before:]] == ["bytes=12345-"]
    assert not os.path.exists(part)


def test_whole_part_file_is_finished_without_downloading_again(host, cache):
    url = host.url + "/model.gguf"
    os.makedirs(cache)
    with open(cache_path(url) + ".part", "wb") as f:
        f.write(FAKE)
    before = len(host.seen("/model.gguf"))
    path = resolve_model(ServerConfig(model_url=url))
    with open(path, "rb") as f:
        assert f.read() == FAKE
    assert [r["range"] for r in host.seen("/model.gguf")[before:]] == [f"bytes={len(FAKE)}-"]   # one 416


def test_server_ignoring_range_gets_the_whole_file_again(host, cache):
    url = host.url + "/norange/model.gguf"
    os.makedirs(cache)
    with open(cache_path(url) + ".part", "wb") as f:
        f.write(b"GGUF-stale-partial-bytes")
    path = resolve_model(ServerConfig(model_url=url))
    with open(path, "rb") as f:
        assert f.read() == FAKE


def test_concurrent_downloads_fetch_once(host, cache):
    url = host.url + "/twice/model.gguf"
    paths: list[str] = []
    threads = [threading.Thread(target=lambda: paths.append(resolve_model(ServerConfig(model_url=url))))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert paths == [cache_path(url)] * 3
    assert len(host.seen("/twice/model.gguf")) == 1
    with open(paths[0], "rb") as f:
        assert f.read() == FAKE


def test_404_is_a_clear_error(host, cache):
    url = host.url + "/missing.gguf"
    with pytest.raises(ModelLoadError) as err:
        resolve_model(ServerConfig(model_url=url))
    msg = str(err.value)
    assert url in msg and "404" in msg
    assert not os.path.exists(cache_path(url)) and not os.path.exists(cache_path(url) + ".part")


def test_not_a_gguf_file_is_rejected(host, cache):
    url = host.url + "/not-gguf.bin"
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        resolve_model(ServerConfig(model_url=url))
    assert not os.path.exists(cache_path(url)) and not os.path.exists(cache_path(url) + ".part")


def test_unreachable_host_is_a_clear_error(cache):
    url = f"http://127.0.0.1:{free_port()}/model.gguf"
    with pytest.raises(ModelLoadError) as err:
        resolve_model(ServerConfig(model_url=url))
    assert url in str(err.value)


def test_only_http_urls(cache):
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/model.gguf"):
        with pytest.raises(ModelLoadError, match="only http"):
            resolve_model(ServerConfig(model_url=url))
    assert not os.path.exists(cache)


def test_hugging_face_repo_and_file(host, cache, monkeypatch):
    monkeypatch.setenv("LLAMACY_HF_ENDPOINT", host.url)
    monkeypatch.setenv("HF_TOKEN", "hf-test-token")
    path = resolve_model(ServerConfig(hf_repo="org/repo", hf_file="model.gguf"))
    with open(path, "rb") as f:
        assert f.read() == FAKE
    (req,) = host.seen("/org/repo/resolve/main/model.gguf")
    assert req["authorization"] == "Bearer hf-test-token"
    assert os.path.dirname(path) == str(cache)
    # a plain -mu URL never gets the token
    resolve_model(ServerConfig(model_url=host.url + "/norange/model.gguf"))
    assert host.seen("/norange/model.gguf")[-1]["authorization"] is None


def test_redirect_keeps_range_and_drops_the_token(host, cache, monkeypatch):
    monkeypatch.setenv("LLAMACY_HF_ENDPOINT", host.url)
    monkeypatch.setenv("HF_TOKEN", "hf-test-token")
    url = host.url + "/org/redirect/resolve/main/model.gguf"
    os.makedirs(cache)
    with open(cache_path(url) + ".part", "wb") as f:
        f.write(FAKE[:999])
    path = resolve_model(ServerConfig(hf_repo="org/redirect", hf_file="model.gguf"))
    with open(path, "rb") as f:
        assert f.read() == FAKE
    first = host.seen("/org/redirect/resolve/main/model.gguf")[-1]
    cdn = host.seen("/cdn/model.gguf")[-1]
    assert first["authorization"] == "Bearer hf-test-token" and first["range"] == "bytes=999-"
    assert cdn["authorization"] is None and cdn["range"] == "bytes=999-"


def test_hf_repo_needs_hf_file(cache):
    with pytest.raises(ModelLoadError, match="hf-file"):
        resolve_model(ServerConfig(hf_repo="org/repo"))


def test_model_flag_names_the_destination(host, cache, tmp_path):
    dest = tmp_path / "models" / "mine.gguf"
    path = resolve_model(ServerConfig(model=str(dest), model_url=host.url + "/model.gguf"))
    assert path == str(dest) and dest.read_bytes() == FAKE


def test_server_with_model_url(host, tmp_path, server_factory):
    cache = tmp_path / "e2e-cache"
    srv = server_factory("-c", "256", "-mu", host.url + "/real/model.gguf", env={"LLAMACY_CACHE": str(cache)})
    r = srv.post("/completion", json={"prompt": "The capital of France is", "n_predict": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 4
    (name,) = [n for n in os.listdir(cache) if not n.endswith(".lock")]
    assert name.endswith("model.gguf")
    assert os.path.getsize(cache / name) == os.path.getsize(default_model_path())
    shutil.rmtree(cache)


def test_server_exits_1_with_the_download_error(host, tmp_path):
    url = host.url + "/missing.gguf"
    srv = ServerProcess("-c", "256", "-mu", url, env={"LLAMACY_CACHE": str(tmp_path / "c")}, wait=False)
    try:
        assert srv.proc.wait(60) == 1
        log = srv.log()
        assert url in log and "404" in log
    finally:
        srv.stop()
