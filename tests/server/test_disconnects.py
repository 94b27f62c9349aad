"""Clients that vanish — while queued, prefilling, streaming, embedding, or not reading — free
everything they held: every handler finishes (the in-flight gauge returns to 0), every slot
goes idle, the queue empties, memory stays flat. And a full queue answers 503 + Retry-After."""
from __future__ import annotations

import random
import socket

import pytest

from helpers import metrics, quiescent, rss_kib, run_in_threads, send_raw, vanish, wait_for

LONG = {"prompt": "Once upon a time", "n_predict": 100_000, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def server(server_factory):
    # MALLOC_ARENA_MAX=2 as in tools/llamacy.service: with glibc's default of one malloc arena
    # per thread, RSS keeps stepping up for a few storms before it settles.
    return server_factory("-c", "2048", "-np", "4", "-t", "1", "--metrics", "--embeddings", "--queue-max", "400",
                          env={"MALLOC_ARENA_MAX": "2"})


def settle(server) -> dict:
    return wait_for(lambda: quiescent(server), "every handler to finish and every slot to be idle", timeout=120)


def all_slots_idle(server) -> bool:
    return all(s["state"] == 0 for s in server.get("/slots").json())


def read_some(sock: socket.socket, n: int = 1) -> bytes:
    sock.settimeout(60)
    return sock.recv(n)


def test_queued_requests_whose_clients_vanish_end(server_factory):
    srv = server_factory("-c", "512", "-np", "1", "-t", "1", "--metrics")
    holder = send_raw(srv, "/completion", {**LONG, "stream": True})
    assert read_some(holder)                        # the slot is busy streaming
    queued = [send_raw(srv, "/completion", {"prompt": f"Question {i}:", "n_predict": 4}) for i in range(5)]
    wait_for(lambda: metrics(srv)["llamacpp:requests_deferred"] == 5, "5 deferred requests")
    for s in queued:
        vanish(s)
    m = wait_for(lambda: (lambda m: m if m["llamacpp:requests_deferred"] == 0
                          and m["llamacy:http_requests_in_flight"] == 1 else None)(metrics(srv)),
                 "the queued requests' handlers to finish")
    assert m["llamacpp:requests_processing"] == 1   # the holder streams on
    vanish(holder)
    settle(srv)


def test_a_full_queue_answers_503_with_retry_after(server_factory):
    srv = server_factory("-c", "512", "-np", "1", "-t", "1", "--metrics", "--queue-max", "2")
    holder = send_raw(srv, "/completion", {**LONG, "stream": True})
    assert read_some(holder)
    queued = [send_raw(srv, "/completion", {"prompt": "Hi", "n_predict": 2}) for _ in range(2)]
    wait_for(lambda: metrics(srv)["llamacpp:requests_deferred"] == 2, "2 deferred requests")
    r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 2})
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert "--queue-max 2" in r.json()["error"]["message"]
    assert metrics(srv)[("llamacy:requests_rejected_total", "queue_full")] == 1
    for s in queued + [holder]:
        vanish(s)
    settle(srv)
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200


def test_a_client_that_stops_reading_is_cut_off_after_the_timeout(server_factory):
    srv = server_factory("-c", "4096", "-np", "1", "-t", "1", "--metrics", "-to", "2", "--max-n-probs", "2000")
    # n_probs makes every event big (~100 KB), so the socket buffers of a client that reads nothing
    # (the server's grows to 4 MiB on loopback) fill within a few dozen tokens, however loaded the machine
    stalled = send_raw(srv, "/completion", {**LONG, "stream": True, "n_probs": 2000}, rcvbuf=4096)
    try:
        wait_for(lambda: "did not read for 2 s" in srv.log(), "the server to give up on the stalled client",
                 timeout=120)
        settle(srv)
        assert all_slots_idle(srv)
    finally:
        vanish(stalled)


def test_an_embedding_request_whose_client_vanishes_ends(server):
    inputs = [f"sentence number {i} about nothing in particular" for i in range(1500)]
    s = send_raw(server, "/v1/embeddings", {"input": inputs})
    wait_for(lambda: metrics(server)["llamacpp:requests_deferred"] == 1, "the embedding request to be queued")
    vanish(s)
    settle(server)


def storm(server, n_clients: int, seed: int) -> None:
    """``n_clients`` requests of every kind, each dropped at a random moment."""
    rng = random.Random(seed)
    kinds = [
        ("/completion", {**LONG, "stream": True}, 1),                                   # streaming
        ("/completion", {"prompt": "Tell me a story.", "n_predict": 64}, 0),             # waiting for a result
        ("/completion", {"prompt": "word " * 1500, "n_predict": 8}, 0),                  # prefilling a long prompt
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                                  "max_tokens": 200}, 1),
        ("/embedding", {"content": [f"text {i}" for i in range(40)]}, 0),                # embedding
    ]
    def client(i: int) -> None:
        path, body, first_bytes = kinds[i % len(kinds)]
        s = send_raw(server, path, body)
        if first_bytes and rng.random() < 0.5:
            read_some(s)                        # vanish mid-stream
        vanish(s)

    for start in range(0, n_clients, 50):
        run_in_threads(client, [(i,) for i in range(start, min(start + 50, n_clients))])


def test_disconnect_storms_leave_nothing_behind(server):
    """After each storm every handler has finished and every slot is idle; and RSS levels off:
    the allocator keeps a high-water mark that depends on how many requests overlapped, so a
    leak shows as growth that never stops — two storms in a row must each add less than 1 %."""
    rss = [rss_kib(server.proc.pid)]
    for seed in range(1, 11):
        storm(server, 100, seed=seed)
        m = settle(server)
        assert m["llamacy:http_requests_in_flight"] == 0
        assert all_slots_idle(server)
        rss.append(rss_kib(server.proc.pid))
        if seed >= 3 and rss[-1] <= rss[-2] * 1.01 and rss[-2] <= rss[-3] * 1.01:
            break
    else:
        raise AssertionError(f"RSS kept growing over 10 storms (KiB after each): {rss}")
    r = server.post("/completion", json={"prompt": "Hi", "n_predict": 4, "temperature": 0})
    assert r.status_code == 200, r.text
