"""Today's llama-server flags and fields beyond the 2024 spec, through the real server:
sampling defaults on the command line, alias lists and tags, several --host addresses,
--no-ui, ``model_path``/``params`` in /props, ``is_processing`` in /slots, CORS preflight."""
from __future__ import annotations

import socket

import requests

from helpers import sse_events

PROMPT = "The capital of France is"


def test_sampling_defaults_from_the_command_line(server_factory):
    srv = server_factory("-c", "1024", "--temp", "0", "--seed", "1234", "--top-k", "7", "-n", "12")
    settings = srv.get("/props").json()["default_generation_settings"]
    assert settings["temperature"] == 0 and settings["seed"] == 1234 and settings["top_k"] == 7
    assert settings["params"]["seed"] == 1234
    # the default applies to a request that leaves the option out; the request's own value wins
    implicit = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 12}).json()
    assert implicit["generation_settings"]["temperature"] == 0 and implicit["generation_settings"]["top_k"] == 7
    explicit = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 12, "temperature": 0,
                                             "top_k": 7}).json()
    assert implicit["content"] == explicit["content"]
    hot = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 1, "temperature": 1.5}).json()
    assert hot["generation_settings"]["temperature"] == 1.5


def test_props_model_path_and_slots_is_processing(server_factory):
    srv = server_factory("-c", "1024", "-np", "2")
    props = srv.get("/props").json()
    assert props["model_path"].endswith(".gguf")
    slots = srv.get("/slots").json()
    assert [s["is_processing"] for s in slots] == [False, False]


def test_alias_list_and_tags(server_factory):
    srv = server_factory("-c", "512", "-a", "smol,chat,assistant", "--tags", "small,test")
    model = srv.get("/v1/models").json()["data"][0]
    assert model["id"] == "assistant"            # the first alias in sorted order, as llama-server
    assert set(model["aliases"]) == {"smol", "chat", "assistant"} and set(model["tags"]) == {"small", "test"}


def test_no_ui_serves_no_front_end(server_factory):
    srv = server_factory("-c", "512", "--no-ui")
    assert srv.get("/").status_code == 404
    assert srv.get("/health").status_code == 200


def test_several_host_addresses(server_factory):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))       # this machine has IPv6 loopback (the test needs it)
    srv = server_factory("-c", "512", "--host", "127.0.0.1,::1", "--api-key", "k")
    for base in (f"http://127.0.0.1:{srv.port}", f"http://[::1]:{srv.port}"):
        assert requests.get(base + "/health", timeout=30).status_code == 200
        r = requests.post(base + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "stream": True},
                          headers={"Authorization": "Bearer k"}, stream=True, timeout=60)
        assert r.status_code == 200 and len(sse_events(r)) >= 2
        assert requests.post(base + "/v1/completions", json={}, timeout=30).status_code == 401


def test_cors_preflight_is_200_without_a_key(server_factory):
    srv = server_factory("-c", "512", "--api-key", "k")
    r = requests.options(srv.url + "/v1/chat/completions", timeout=30,
                         headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "http://example.test"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
