"""GET /metrics (--metrics): the spec's Prometheus names, values that move, 501 when disabled."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

SPEC_NAMES = {
    "llamacpp:prompt_tokens_total": "counter",
    "llamacpp:tokens_predicted_total": "counter",
    "llamacpp:prompt_tokens_seconds": "gauge",
    "llamacpp:predicted_tokens_seconds": "gauge",
    "llamacpp:kv_cache_usage_ratio": "gauge",
    "llamacpp:kv_cache_tokens": "gauge",
    "llamacpp:requests_processing": "gauge",
    "llamacpp:requests_deferred": "gauge",
}
LATENCY = "llamacy:http_request_duration_seconds"


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory):
    # --slot-save-path: the spec disables the slot actions (erase included) without it
    return server_factory("-c", "512", "-np", "2", "-t", "1", "--metrics",
                          "--slot-save-path", str(tmp_path_factory.mktemp("metrics-slots")))


def scrape(server) -> tuple[str, dict[str, float], list]:
    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(r.text))
    values = {s.name: s.value for f in families for s in f.samples if not s.labels}
    return r.text, values, families


def complete(server, n_predict=8, **body):
    r = server.post("/completion", json={"prompt": "The capital of France is", "n_predict": n_predict,
                                         "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_every_spec_name_with_its_type(server):
    text, values, families = scrape(server)
    for name, typ in SPEC_NAMES.items():
        assert f"# TYPE {name} {typ}\n" in text, name   # exactly the spec's name, as llama.cpp writes it
        assert name in values, name
    types = {f.name: f.type for f in families}
    assert types[LATENCY] == "histogram"


def test_counters_increase_after_a_completion(server):
    _, before, _ = scrape(server)
    res = complete(server, n_predict=6, ignore_eos=True)
    _, after, _ = scrape(server)
    n_prompt = res["timings"]["prompt_n"]
    assert after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"] == n_prompt
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == 6
    assert after["llamacpp:prompt_tokens_seconds"] > 0
    assert after["llamacpp:predicted_tokens_seconds"] > 0
    assert after["llamacpp:requests_processing"] == 0 and after["llamacpp:requests_deferred"] == 0


def test_kv_cache_gauges_follow_the_cache(server):
    res = complete(server, n_predict=4, cache_prompt=True, id_slot=0)
    _, values, _ = scrape(server)
    kv = values["llamacpp:kv_cache_tokens"]
    assert kv >= res["tokens_cached"] > 0
    assert values["llamacpp:kv_cache_usage_ratio"] == pytest.approx(kv / 512)
    assert 0 < values["llamacpp:kv_cache_usage_ratio"] <= 1
    erased = server.post("/slots/0?action=erase").json()["n_erased"]
    _, values2, _ = scrape(server)
    assert values2["llamacpp:kv_cache_tokens"] == kv - erased


def test_requests_processing_during_a_stream(server):
    r = server.post("/completion", json={"prompt": "Once upon a time", "n_predict": 200, "ignore_eos": True,
                                         "stream": True}, stream=True)
    try:
        lines = r.iter_lines()                # kept: a dropped iterator closes the connection (the request ends)
        first = next(lines)                   # the first token is out: the request holds a slot
        _, values, _ = scrape(server)
        assert values["llamacpp:requests_processing"] == 1, (first, values)
    finally:
        r.close()


def test_latency_histogram_by_path_and_status(server):
    complete(server, n_predict=2)
    server.post("/completion", json={"prompt": "x", "grammar": "root ::= ("})   # a 400
    server.post("/slots/1?action=erase")
    _, _, families = scrape(server)
    (hist,) = [f for f in families if f.name == LATENCY]
    counts = {(s.labels["path"], s.labels["status"]): s.value for s in hist.samples
              if s.name == LATENCY + "_count"}
    assert counts[("/completion", "200")] >= 1
    assert counts[("/completion", "400")] >= 1
    assert any(path == "/slots/{id}" for path, _ in counts)      # ids are folded: bounded label values
    assert not any(path.startswith("/slots/") and path[7:].isdigit() for path, _ in counts)
    inf = [s for s in hist.samples if s.name == LATENCY + "_bucket" and s.labels["le"] == "+Inf"
           and s.labels["path"] == "/completion" and s.labels["status"] == "200"]
    assert inf[0].value == counts[("/completion", "200")]


def test_disabled_without_flag(server_factory):
    srv = server_factory("-c", "256")
    r = srv.get("/metrics")
    assert r.status_code == 501
    assert r.json() == {"error": {"code": 501, "message": "This server does not support metrics endpoint.",
                                  "type": "not_supported_error"}}


def test_api_key_protects_metrics(server_factory):
    srv = server_factory("-c", "256", "--metrics", "--api-key", "k1")
    assert srv.get("/metrics").status_code == 401
    r = srv.get("/metrics", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200 and "llamacpp:kv_cache_tokens" in r.text
