"""Bad requests get a 4xx in the spec's error JSON, naming the field, and never hurt the server."""
from __future__ import annotations

import time

import pytest
import requests

N_PARALLEL = 2
OK = {"prompt": "Hi", "n_predict": 4, "temperature": 0}    # a valid body the cases below spoil


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "512", "-np", str(N_PARALLEL), "-t", "1")


def completion(field: str, value, expect_field: str | None = None, status: int = 400):
    """A /completion body with one bad field; the error message must name ``expect_field`` (default: field)."""
    return ("POST", "/completion", {**OK, field: value}, status, expect_field or field)


def raw(path: str, data: bytes, status: int = 400, field: str | None = None):
    return ("POST", path, data, status, field)


CASES = {
    # --- /completion: bodies that are not a JSON object ----------------------------------------
    "completion-malformed-json": raw("/completion", b'{"prompt": "hi",'),
    "completion-json-array": ("POST", "/completion", [OK], 400, None),
    "completion-json-string": ("POST", "/completion", "Hi", 400, None),
    "completion-json-number": raw("/completion", b"42"),
    "completion-invalid-utf8": raw("/completion", b'{"prompt": "\xff\xfe"}'),
    "completion-nan": raw("/completion", b'{"prompt": "hi", "temperature": NaN}'),
    "completion-infinite-number": raw("/completion", b'{"prompt": "hi", "temperature": 1e400}'),
    "completion-deeply-nested": raw("/completion", b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "completion-empty-body": raw("/completion", b"", field="prompt"),
    # --- /completion: the prompt --------------------------------------------------------------
    "prompt-missing": ("POST", "/completion", {"n_predict": 4}, 400, "prompt"),
    "prompt-null": completion("prompt", None),
    "prompt-number": completion("prompt", 5),
    "prompt-object": completion("prompt", {"text": "hi"}),
    "prompt-float-token": completion("prompt", [1.5]),
    "prompt-bool-token": completion("prompt", [True]),
    "prompt-token-too-big": completion("prompt", [99999999]),
    "prompt-token-negative": completion("prompt", [-1]),
    "prompt-nested-array": completion("prompt", [[[1, 2]]]),   # [[1, 2]] is today's form of several prompts
    # --- /completion: numbers -----------------------------------------------------------------
    "n_predict-string": completion("n_predict", "x"),
    "n_predict-float": completion("n_predict", 1.5),
    "n_predict-bool": completion("n_predict", True),
    "n_predict-huge": completion("n_predict", 2 ** 40),
    "n_predict-below-minus-one": completion("n_predict", -2),
    "n_keep-string": completion("n_keep", "x"),
    "temperature-string": completion("temperature", "hot"),
    "temperature-array": completion("temperature", [1]),
    "temperature-bool": completion("temperature", True),
    "dynatemp_range-string": completion("dynatemp_range", "x"),
    "dynatemp_exponent-string": completion("dynatemp_exponent", "x"),
    "top_k-float": completion("top_k", 1.5),
    "top_k-string": completion("top_k", "40"),
    "top_p-string": completion("top_p", "x"),
    "min_p-string": completion("min_p", "x"),
    "tfs_z-string": completion("tfs_z", "x"),
    "typical_p-string": completion("typical_p", "x"),
    "repeat_penalty-string": completion("repeat_penalty", "x"),
    "repeat_last_n-string": completion("repeat_last_n", "x"),
    "repeat_last_n-float": completion("repeat_last_n", 1.5),
    "presence_penalty-string": completion("presence_penalty", "x"),
    "frequency_penalty-string": completion("frequency_penalty", "x"),
    "mirostat-7": completion("mirostat", 7),
    "mirostat-string": completion("mirostat", "x"),
    "mirostat_tau-string": completion("mirostat_tau", "x"),
    "mirostat_eta-string": completion("mirostat_eta", "x"),
    "seed-minus-5": completion("seed", -5),
    "seed-string": completion("seed", "x"),
    "seed-float": completion("seed", 1.5),
    "n_probs-minus-1": completion("n_probs", -1),
    "n_probs-string": completion("n_probs", "x"),
    "min_keep-string": completion("min_keep", "x"),
    "id_slot-99": completion("id_slot", 99),
    "id_slot-string": completion("id_slot", "0"),
    "id_slot-minus-2": completion("id_slot", -2),
    "slot_id-string": completion("slot_id", "x"),
    # --- /completion: booleans ----------------------------------------------------------------
    "stream-yes": completion("stream", "yes"),
    "stream-one": completion("stream", 1),
    "ignore_eos-string": completion("ignore_eos", "x"),
    "penalize_nl-int": completion("penalize_nl", 0),
    "cache_prompt-string": completion("cache_prompt", "yes"),
    # --- /completion: strings, arrays, objects ------------------------------------------------
    "stop-number": completion("stop", 5),
    "stop-array-of-numbers": completion("stop", [1]),
    "stop-object": completion("stop", {"a": "b"}),
    "logit_bias-string": completion("logit_bias", "x"),
    "logit_bias-short-pair": completion("logit_bias", [[1]]),
    "logit_bias-bad-bias": completion("logit_bias", [[1, "x"]]),
    "logit_bias-bad-token": completion("logit_bias", [[None, 1.0]]),
    "logit_bias-token-too-big": completion("logit_bias", [[99999999, 1.0]]),
    "logit_bias-map-bad-bias": completion("logit_bias", {"15043": "x"}),
    "samplers-unknown": completion("samplers", ["nope"]),
    "samplers-string": completion("samplers", "top_k"),
    "samplers-numbers": completion("samplers", [1]),
    "penalty_prompt-number": completion("penalty_prompt", 5),
    "penalty_prompt-float-token": completion("penalty_prompt", [1.5]),
    "grammar-number": completion("grammar", 5),
    "grammar-unparsable": completion("grammar", "root ::= (", expect_field="grammar"),
    "json_schema-number": completion("json_schema", 5, expect_field="schema"),
    "json_schema-bad-type": completion("json_schema", {"type": "nope"}, expect_field="schema"),
    "system_prompt-number": completion("system_prompt", 5),
    # --- /tokenize ----------------------------------------------------------------------------
    "tokenize-malformed-json": raw("/tokenize", b'{"content": '),
    "tokenize-json-array": ("POST", "/tokenize", ["hi"], 400, None),
    "tokenize-content-missing": ("POST", "/tokenize", {}, 400, "content"),
    "tokenize-content-number": ("POST", "/tokenize", {"content": 5}, 400, "content"),
    "tokenize-content-null": ("POST", "/tokenize", {"content": None}, 400, "content"),
    "tokenize-add_special-string": ("POST", "/tokenize", {"content": "a", "add_special": "yes"}, 400, "add_special"),
    # --- /detokenize --------------------------------------------------------------------------
    "detokenize-malformed-json": raw("/detokenize", b'{"tokens": [1,'),
    "detokenize-json-array": ("POST", "/detokenize", [1, 2], 400, None),
    "detokenize-tokens-string": ("POST", "/detokenize", {"tokens": "x"}, 400, "tokens"),
    "detokenize-tokens-float": ("POST", "/detokenize", {"tokens": [1.5]}, 400, "tokens"),
    "detokenize-tokens-negative": ("POST", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
    "detokenize-tokens-too-big": ("POST", "/detokenize", {"tokens": [99999999]}, 400, "tokens"),
    "detokenize-tokens-bool": ("POST", "/detokenize", {"tokens": [True]}, 400, "tokens"),
    "detokenize-tokens-nested": ("POST", "/detokenize", {"tokens": [[1]]}, 400, "tokens"),
    # --- /slots/{id}?action= ------------------------------------------------------------------
    "slots-unknown-action": ("POST", "/slots/0?action=nope", {}, 400, "action"),
    "slots-missing-action": ("POST", "/slots/0", {}, 400, "action"),
    # 400 naming id_slot, or 501 where slot actions are off altogether (no --slot-save-path, as here)
    "slots-id-out-of-range": ("POST", "/slots/99?action=erase", {}, (400, 501), "id_slot"),
    "slots-save-without-slot-save-path": ("POST", "/slots/0?action=save", {"filename": "a.bin"}, 501, None),
    "slots-restore-without-slot-save-path": ("POST", "/slots/0?action=restore", {"filename": "a.bin"}, 501, None),
    # --- unknown paths and wrong methods ------------------------------------------------------
    "unknown-path-get": ("GET", "/nope", None, 404, None),
    "unknown-api-path-get": ("GET", "/v1/nope", None, 404, None),
    "unknown-path-post": ("POST", "/v1/nope", {"prompt": "hi"}, 404, None),
    "unknown-path-post-api": ("POST", "/api/generate", {"prompt": "hi"}, 404, None),
    "slots-non-numeric-id": ("POST", "/slots/abc?action=erase", {}, 404, None),
    "wrong-method-get-completion": ("GET", "/completion", None, 405, None),
    "wrong-method-put-completion": ("PUT", "/completion", OK, 405, None),
    "wrong-method-get-tokenize": ("GET", "/tokenize", None, 405, None),
    "wrong-method-post-health": ("POST", "/health", {}, 405, None),
    "wrong-method-post-props": ("POST", "/props", {}, 405, None),
    "wrong-method-delete-slots": ("DELETE", "/slots", None, 405, None),
    "wrong-method-get-slot-action": ("GET", "/slots/0?action=erase", None, 405, None),
}


def send(server, method: str, path: str, body) -> requests.Response:
    kw: dict = {"timeout": 30}
    if isinstance(body, bytes):
        kw["data"] = body
        kw["headers"] = {"Content-Type": "application/json"}
    elif body is not None:
        kw["json"] = body
    return requests.request(method, server.url + path, **kw)


def assert_error_json(r: requests.Response, status, field: str | None) -> dict:
    """``status``: the code, a tuple of allowed codes, or None for any 4xx; ``field`` is named in a 400's message."""
    if status is None:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
    elif isinstance(status, tuple):
        assert r.status_code in status, (r.status_code, r.text)
    else:
        assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "type"}, err
    assert err["code"] == r.status_code
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if r.status_code == 400:
        assert err["type"] == "invalid_request_error", err
    if r.status_code == 404:
        assert err["type"] == "not_found_error", err
    if r.status_code == 501:
        assert err["type"] == "not_supported_error", err
    if field is not None and r.status_code == 400:
        assert field.lower() in err["message"].lower(), f"message does not name {field!r}: {err['message']!r}"
    return err


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_request(server, case):
    method, path, body, status, field = case
    r = send(server, method, path, body)
    assert_error_json(r, status, field)


def test_slot_erase_disabled_without_slot_save_path(server):
    """The spec: without --slot-save-path "the slot management endpoints will be disabled" (erase too)."""
    r = send(server, "POST", "/slots/0?action=erase", None)
    assert_error_json(r, 501, None)


def test_server_healthy_after_bad_requests(server):
    """Runs last: the process is alive, a normal completion works and no slot leaked."""
    assert server.proc.poll() is None, server.log()[-3000:]
    r = send(server, "POST", "/completion", OK)
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] >= 1
    deadline = time.monotonic() + 5
    while True:
        h = server.get("/health", timeout=10).json()
        if h["slots_idle"] == N_PARALLEL or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert h == {"status": "ok", "slots_idle": N_PARALLEL, "slots_processing": 0}


def test_no_tracebacks_logged_for_client_errors(server):
    """Every case above is the client's fault (501 for a disabled feature included): no 'Uncaught exception'."""
    log = server.log()
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-3000:]
