"""Many clients at once on one server with 4 slots: isolation, admission, disconnects, a responsive IOLoop."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import sse_events

N_PARALLEL = 4
N_PREDICT = 24
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "My favourite recipe for pancakes needs",
    "In 1969, the first humans",
    "Photosynthesis is the process by which",
    "The quick brown fox",
]


@pytest.fixture(scope="module")
def server(server_factory):
    # -t 1: on a shared 2-core machine, ggml's spinning thread barriers make -t 2 many times slower
    return server_factory("-c", "4096", "-np", str(N_PARALLEL), "-t", "1")


def body(prompt: str, **kw) -> dict:
    return {"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, **kw}


def complete(url: str, prompt: str, **kw) -> dict:
    with requests.Session() as s:
        r = s.post(url + "/completion", json=body(prompt, **kw), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def health(server) -> dict:
    return server.get("/health", timeout=10).json()


def wait_idle(server, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = health(server)
        if h["slots_idle"] == N_PARALLEL or time.monotonic() > deadline:
            return h
        time.sleep(0.02)


@pytest.fixture(scope="module")
def alone(server) -> dict[str, str]:
    """Each prompt's greedy output when it is the only request on the server."""
    return {p: complete(server.url, p)["content"] for p in PROMPTS}


def test_concurrent_requests_match_solo_runs_and_respect_slots(server, alone):
    lock = threading.Lock()
    outstanding = 0
    samples: list[tuple[int, dict]] = []     # (requests in flight when the probe was sent, /health)
    done = threading.Event()

    def client(prompt: str) -> dict:
        nonlocal outstanding
        with lock:
            outstanding += 1
        try:
            return complete(server.url, prompt)
        finally:
            with lock:
                outstanding -= 1

    def monitor() -> None:
        while not done.is_set():
            with lock:
                n = outstanding
            samples.append((n, health(server)))
            time.sleep(0.01)

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    try:
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            results = list(pool.map(client, PROMPTS))
    finally:
        done.set()
        mon.join(10)

    for prompt, res in zip(PROMPTS, results):
        assert res["content"] == alone[prompt], prompt
        assert res["tokens_predicted"] == N_PREDICT or res["stopped_eos"]
        assert 0 <= res["id_slot"] < N_PARALLEL
    assert len({res["id_slot"] for res in results}) == N_PARALLEL, "every slot served some request"

    busy = [h["slots_processing"] for _, h in samples]
    assert busy and max(busy) == N_PARALLEL, busy
    assert all(h["slots_idle"] + h["slots_processing"] == N_PARALLEL for _, h in samples)
    # while all 4 slots were busy, more than 4 requests were in flight: the rest were deferred
    assert any(n > N_PARALLEL and h["slots_processing"] == N_PARALLEL for n, h in samples), samples
    assert wait_idle(server, 5)["slots_idle"] == N_PARALLEL


def test_slots_endpoint_shows_at_most_np_processing(server):
    seen: list[int] = []
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set():
            slots = server.get("/slots", timeout=10).json()
            assert len(slots) == N_PARALLEL
            seen.append(sum(s["state"] != 0 for s in slots))
            time.sleep(0.01)

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    try:
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            list(pool.map(lambda p: complete(server.url, p, n_predict=16), PROMPTS))
    finally:
        done.set()
        mon.join(10)
    assert seen and max(seen) <= N_PARALLEL and N_PARALLEL in seen, seen


def test_disconnect_mid_stream_frees_slot(server):
    assert wait_idle(server, 5)["slots_idle"] == N_PARALLEL
    s = requests.Session()
    r = s.post(server.url + "/completion", json=body(PROMPTS[1], n_predict=400, ignore_eos=True, stream=True),
               stream=True, timeout=60)
    lines = r.iter_lines()
    for line in lines:
        if line.startswith(b"data: "):
            break
    assert health(server)["slots_processing"] == 1
    r.close()
    s.close()
    t0 = time.monotonic()
    h = wait_idle(server, 1.0)
    assert h["slots_idle"] == N_PARALLEL, f"slot still busy {time.monotonic() - t0:.2f} s after the disconnect"
    # and the freed slot serves the next request normally
    assert complete(server.url, PROMPTS[0])["content"] == complete(server.url, PROMPTS[0])["content"]


def test_disconnect_non_streaming_frees_slot(server):
    """A client that gives up on a non-streamed request (read timeout) also frees its slot."""
    with pytest.raises(requests.exceptions.ReadTimeout):
        with requests.Session() as s:
            s.post(server.url + "/completion", json=body(PROMPTS[2], n_predict=400, ignore_eos=True), timeout=(5, 0.5))
    h = wait_idle(server, 2.0)
    assert h["slots_idle"] == N_PARALLEL, h


def test_health_is_fast_during_long_generation(server):
    with requests.Session() as s:
        r = s.post(server.url + "/completion", json=body(PROMPTS[3], n_predict=400, ignore_eos=True, stream=True),
                   stream=True, timeout=60)
        n_events = 0
        latencies = []
        for line in r.iter_lines():
            if not line.startswith(b"data: "):
                continue
            n_events += 1
            if n_events % 4 == 0:     # probe between tokens while the engine keeps decoding
                t0 = time.perf_counter()
                h = server.get("/health", timeout=5)
                latencies.append(time.perf_counter() - t0)
                assert h.status_code == 200 and h.json()["slots_processing"] == 1
            if len(latencies) == 6:
                break
        r.close()
    assert wait_idle(server, 2)["slots_idle"] == N_PARALLEL
    assert len(latencies) == 6 and max(latencies) < 0.5, latencies


def test_parallel_streams_equal_non_streamed(server, alone):
    prompts = PROMPTS[:N_PARALLEL]

    def stream(prompt: str) -> tuple[str, list[dict]]:
        with requests.Session() as s:
            r = s.post(server.url + "/completion", json=body(prompt, stream=True), stream=True, timeout=120)
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = sse_events(r)
        return "".join(ev["content"] for ev in events), events

    with ThreadPoolExecutor(len(prompts)) as pool:
        outs = list(pool.map(stream, prompts))
    for prompt, (text, events) in zip(prompts, outs):
        assert text == alone[prompt], prompt
        assert events[-1]["stop"] is True and all(ev["stop"] is False for ev in events[:-1])
        assert len({ev["id_slot"] for ev in events}) == 1
    assert len({events[0]["id_slot"] for _, events in outs}) == N_PARALLEL
    assert wait_idle(server, 5)["slots_idle"] == N_PARALLEL


SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1,
           "stop": ["\n\n\n", "User:"]}


def test_seeded_sampling_is_the_same_whatever_the_neighbours_do(server):
    """A seeded, sampled request gives the same text alone and among others sampling in
    parallel in the same steps (with different seeds, settings and stop strings)."""
    solo = {seed: complete(server.url, PROMPTS[seed % len(PROMPTS)], seed=seed, **SAMPLED)["content"]
            for seed in (11, 22)}
    neighbours = [(PROMPTS[i], {"seed": 100 + i, **SAMPLED, "temperature": 1.2, "n_predict": 40}) for i in range(4)]
    jobs = [(PROMPTS[seed % len(PROMPTS)], {"seed": seed, **SAMPLED}) for seed in (11, 22)] + neighbours
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: complete(server.url, job[0], **job[1])["content"], jobs))
    assert together[:2] == [solo[11], solo[22]]
