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
# today's llama-server adds these beside the spec's (llama.cpp writes n_tokens_max as a counter)
TODAY_NAMES = {
    "llamacpp:prompt_tokens_cached_total": "counter",
    "llamacpp:prompt_seconds_total": "counter",
    "llamacpp:tokens_predicted_seconds_total": "counter",
    "llamacpp:n_decode_total": "counter",
    "llamacpp:n_tokens_max": "counter",
    "llamacpp:spec_decode_num_draft_tokens_total": "counter",
    "llamacpp:spec_decode_num_accepted_tokens_total": "counter",
    "llamacpp:spec_decode_num_drafts_total": "counter",
    "llamacpp:n_busy_slots_per_decode": "gauge",
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


def engine_values(text: str) -> dict[str, float]:
    """The ``llamacpp:*`` samples by their exact names (prometheus-client's parser renames a
    counter that does not end in ``_total``, such as ``n_tokens_max``)."""
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("llamacpp:")}


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


def test_todays_names_with_help_and_type_and_the_start_time_header(server):
    complete(server, n_predict=3)
    r = server.get("/metrics")
    assert r.status_code == 200
    start = int(r.headers["Process-Start-Time-Unix"])
    assert start == int(server.get("/metrics").headers["Process-Start-Time-Unix"])    # fixed per process
    text = r.text
    for name, typ in {**SPEC_NAMES, **TODAY_NAMES}.items():
        assert f"# HELP {name} " in text, name
        assert f"# TYPE {name} {typ}\n" in text, name
    values = engine_values(text)
    assert values["llamacpp:n_decode_total"] >= 3
    assert values["llamacpp:n_busy_slots_per_decode"] >= 1     # every step so far had a request
    assert values["llamacpp:spec_decode_num_drafts_total"] == 0


def test_decode_steps_cached_tokens_and_longest_sequence(server):
    prompt = "the quick brown fox jumps over the lazy dog"
    before = engine_values(scrape(server)[0])
    first = complete(server, n_predict=4, ignore_eos=True, cache_prompt=True, id_slot=1, prompt=prompt)
    second = complete(server, n_predict=4, ignore_eos=True, cache_prompt=True, id_slot=1, prompt=prompt)
    after = engine_values(scrape(server)[0])
    assert second["timings"]["cache_n"] > 0                      # the second found the first's prompt
    cached = first["timings"]["cache_n"] + second["timings"]["cache_n"]
    assert after["llamacpp:prompt_tokens_cached_total"] - before["llamacpp:prompt_tokens_cached_total"] == cached
    processed = first["timings"]["prompt_n"] + second["timings"]["prompt_n"]
    assert after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"] == processed
    # one decode per generated token after the first of each request, at least one per prompt
    assert after["llamacpp:n_decode_total"] - before["llamacpp:n_decode_total"] >= 2 * 4
    assert after["llamacpp:n_tokens_max"] >= second["tokens_evaluated"] + 4 - 1
    assert after["llamacpp:tokens_predicted_seconds_total"] > before["llamacpp:tokens_predicted_seconds_total"]


def test_generation_rate_counts_decode_steps_not_the_first_token(server):
    one = complete(server, n_predict=1, ignore_eos=True)["timings"]
    assert one["predicted_n"] == 1
    assert one["predicted_per_second"] == 0.0 and one["predicted_per_token_ms"] == 0.0
    t = complete(server, n_predict=16, ignore_eos=True)["timings"]
    assert t["predicted_n"] == 16
    assert t["predicted_per_second"] == pytest.approx(1e3 / t["predicted_ms"] * 15, rel=1e-12)
    assert t["predicted_per_token_ms"] == pytest.approx(t["predicted_ms"] / 15, rel=1e-12)


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
