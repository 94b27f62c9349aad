"""The small native endpoints against the real server: /health, /tokenize, /detokenize, /props, /slots."""
from __future__ import annotations

import threading
import time

import pytest
import requests

PROMPT = "The capital of France is"

# The keys of one /slots entry in the spec's example (README, "GET /slots").
SPEC_SLOT_KEYS = {
    "dynatemp_exponent", "dynatemp_range", "frequency_penalty", "grammar", "id", "ignore_eos", "logit_bias",
    "min_p", "mirostat", "mirostat_eta", "mirostat_tau", "model", "n_ctx", "n_keep", "n_predict", "n_probs",
    "next_token", "penalize_nl", "penalty_prompt_tokens", "presence_penalty", "prompt", "repeat_last_n",
    "repeat_penalty", "samplers", "seed", "state", "stop", "stream", "task_id", "temperature", "tfs_z", "top_k",
    "top_p", "typical_p", "use_penalty_prompt_tokens",
}
SPEC_NEXT_TOKEN_KEYS = {"has_next_token", "n_remain", "n_decoded", "stopped_eos", "stopped_limit", "stopped_word",
                        "stopping_word"}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "1024", "-np", "1", "-t", "1")


@pytest.fixture(scope="module")
def no_slots_server(server_factory):
    return server_factory("-c", "512", "-np", "2", "-t", "1", "--slots-endpoint-disable")


class LongStream:
    """A streaming completion that keeps one slot busy until ``stop()`` closes the connection."""

    def __init__(self, server, **body) -> None:
        self.server = server
        self.body = {"prompt": PROMPT, "n_predict": 400, "ignore_eos": True, "temperature": 0, "stream": True,
                     **body}
        self.first_event = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with requests.Session() as s:
                r = s.post(self.server.url + "/completion", json=self.body, stream=True, timeout=60)
                try:
                    for line in r.iter_lines():
                        if line.startswith(b"data: "):
                            self.first_event.set()
                        if self._stop.is_set():
                            break
                finally:
                    r.close()
        except BaseException as exc:  # reported by the test that started the stream
            self.error = exc
        finally:
            self.first_event.set()

    def __enter__(self) -> "LongStream":
        self.thread.start()
        assert self.first_event.wait(30), "no streamed event within 30 s"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(30)
        wait_idle(self.server)


def health(server, query: str = "") -> requests.Response:
    return server.get("/health" + query, timeout=10)


def wait_idle(server, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = health(server).json()
        if h.get("slots_processing") == 0 or time.monotonic() > deadline:
            return h
        time.sleep(0.05)


def wait_busy(server, timeout: float = 10.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = health(server)
        if r.json().get("status") == "no slot available" or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


# --- /health ------------------------------------------------------------------------------


def test_health_ok_idle(server):
    r = health(server)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok", "slots_idle": 1, "slots_processing": 0}


def test_health_fail_on_no_slot_is_200_while_idle(server):
    r = health(server, "?fail_on_no_slot=1")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_health_include_slots(server):
    body = health(server, "?include_slots").json()
    assert body["status"] == "ok"
    assert [s["id"] for s in body["slots"]] == [0]
    assert body["slots"][0]["state"] == 0


def test_health_no_slot_available_while_busy(server):
    with LongStream(server):
        r = wait_busy(server)
        assert r.status_code == 200
        assert r.json() == {"status": "no slot available", "slots_idle": 0, "slots_processing": 1}

        r = health(server, "?fail_on_no_slot")
        assert r.status_code == 503
        assert r.json() == {"status": "no slot available", "slots_idle": 0, "slots_processing": 1}

        r = health(server, "?include_slots&fail_on_no_slot=1")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "no slot available"
        (slot,) = body["slots"]
        assert slot["id"] == 0 and slot["state"] == 1 and slot["prompt"] == PROMPT
    h = wait_idle(server)
    assert h == {"status": "ok", "slots_idle": 1, "slots_processing": 0}


def test_health_include_slots_hidden_when_slots_endpoint_disabled(no_slots_server):
    r = health(no_slots_server, "?include_slots")
    assert r.status_code == 200
    body = r.json()
    assert body == {"status": "ok", "slots_idle": 2, "slots_processing": 0}


def test_v1_health_alias(server):
    r = server.get("/v1/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_health_loading_model(server_factory, tmp_path):
    """While the model is still arriving (-mu from a local server that holds the body back),
    /health answers 503 loading model and other endpoints 503 in the error format."""
    import http.server
    import threading

    from llamacy.models import default_model_path

    release = threading.Event()
    data = open(default_model_path(), "rb").read()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        srv = server_factory("-c", "256", "-mu", f"http://127.0.0.1:{host.server_port}/m.gguf",
                             env={"LLAMACY_CACHE": str(tmp_path)}, wait=False)
        deadline = time.monotonic() + 30
        r = None
        while time.monotonic() < deadline:
            try:
                r = srv.get("/health", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert r is not None and r.status_code == 503 and r.json() == {"status": "loading model"}
        r = srv.post("/completion", json={"prompt": "x"}, timeout=5)
        assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable_error"
        release.set()
        srv.wait_ready()
        assert srv.get("/health").json()["status"] == "ok"
    finally:
        release.set()
        host.shutdown()


# --- /tokenize and /detokenize ------------------------------------------------------------


def tokenize(server, content, **kw) -> list[int]:
    r = server.post("/tokenize", json={"content": content, **kw}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def detokenize(server, tokens) -> str:
    r = server.post("/detokenize", json={"tokens": tokens}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["content"]


def test_tokenize_plain(server):
    toks = tokenize(server, "Hello world")
    assert toks and all(isinstance(t, int) for t in toks)
    assert tokenize(server, "Hello world", add_special=False) == toks
    assert tokenize(server, "") == []


def test_tokenize_add_special(server):
    plain = tokenize(server, "Hello world")
    special = tokenize(server, "Hello world", add_special=True)
    # SmolLM2 has add_bos_token false: add_special adds nothing; a BOS model would get one token in front
    assert special[len(special) - len(plain):] == plain
    assert len(special) - len(plain) in (0, 1)


def test_tokenize_special_tokens_are_single(server):
    (im_start,) = tokenize(server, "<|im_start|>")
    (im_end,) = tokenize(server, "<|im_end|>")
    toks = tokenize(server, "<|im_start|>user\nhi<|im_end|>")
    assert toks[0] == im_start and toks[-1] == im_end
    assert im_start not in tokenize(server, "im_start")


def test_detokenize_round_trip_unicode(server):
    text = "héllo 🦙 world 你好 — ok 👍🏽"
    toks = tokenize(server, text)
    assert detokenize(server, toks) == text
    assert detokenize(server, []) == ""


def test_detokenize_round_trip_special_tokens(server):
    """/tokenize parses special tokens, so /detokenize renders them back (llama.cpp: token_to_piece, special)."""
    text = "<|im_start|>user\nhi<|im_end|>"
    assert detokenize(server, tokenize(server, text)) == text


@pytest.mark.parametrize("tokens", [[-1], [10 ** 9], [1.5], ["a"], [True], "abc", {"a": 1}])
def test_detokenize_bad_ids(server, tokens):
    r = server.post("/detokenize", json={"tokens": tokens}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error" and "tokens" in err["message"]


# --- /props ---------------------------------------------------------------------------------


def test_props(server):
    r = server.get("/props", timeout=10)
    assert r.status_code == 200
    props = r.json()
    assert {"assistant_name", "user_name", "default_generation_settings", "total_slots"} <= set(props)
    assert props["total_slots"] == 1
    assert props["assistant_name"] == "" and props["user_name"] == ""
    gs = props["default_generation_settings"]
    # the same fields as a completion's generation_settings
    res = server.post("/completion", json={"prompt": PROMPT, "n_predict": 1}, timeout=60).json()
    assert set(gs) - {"params"} == set(res["generation_settings"])   # params: today's nested copy
    assert gs["n_ctx"] == 1024
    assert gs["temperature"] == pytest.approx(0.8) and gs["top_k"] == 40 and gs["top_p"] == pytest.approx(0.95)
    assert gs["min_p"] == pytest.approx(0.05) and gs["repeat_last_n"] == 64
    assert gs["repeat_penalty"] == pytest.approx(1.1) and gs["n_predict"] == -1 and gs["seed"] == -1


def test_props_total_slots_follows_np(no_slots_server):
    assert no_slots_server.get("/props", timeout=10).json()["total_slots"] == 2


# --- /slots ---------------------------------------------------------------------------------


def test_slots_idle_entries(server):
    r = server.get("/slots", timeout=10)
    assert r.status_code == 200
    slots = r.json()
    assert isinstance(slots, list) and [s["id"] for s in slots] == [0]
    slot = slots[0]
    assert slot["state"] == 0 and slot["n_ctx"] == 1024
    assert SPEC_NEXT_TOKEN_KEYS <= set(slot["next_token"])


def test_slots_have_every_spec_field(server):
    for slot in server.get("/slots", timeout=10).json():
        missing = SPEC_SLOT_KEYS - set(slot)
        assert not missing, f"slot {slot.get('id')} lacks {sorted(missing)}"


def test_slots_busy_entry_reflects_request(server):
    with LongStream(server, stop=["\n\n\n\n"], seed=42, top_k=7):
        wait_busy(server)
        (slot,) = server.get("/slots", timeout=10).json()
        assert slot["id"] == 0 and slot["state"] == 1
        assert slot["task_id"] >= 0
        assert slot["prompt"] == PROMPT
        nt = slot["next_token"]
        assert set(nt) >= SPEC_NEXT_TOKEN_KEYS
        assert nt["has_next_token"] is True
        assert nt["n_decoded"] >= 1 and nt["n_remain"] == 400 - nt["n_decoded"]
        missing = SPEC_SLOT_KEYS - set(slot)
        assert not missing, f"busy slot lacks {sorted(missing)}"
        assert slot["n_predict"] == 400 and slot["stop"] == ["\n\n\n\n"] and slot["seed"] == 42
        assert slot["top_k"] == 7 and slot["temperature"] == 0 and slot["stream"] is True
        assert slot["ignore_eos"] is True and slot["n_ctx"] == 1024


def test_slots_endpoint_disabled(no_slots_server):
    r = no_slots_server.get("/slots", timeout=10)
    assert r.status_code == 501
    assert r.json() == {"error": {"code": 501, "message": "This server does not support slots endpoint.",
                                  "type": "not_supported_error"}}
