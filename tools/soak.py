#!/usr/bin/env python3
"""Soak test: many clients for a long time, every kind of request, then look for leaks.

    python tools/soak.py --clients 32 --minutes 30            # starts its own server
    python tools/soak.py --url http://127.0.0.1:8080 --pid PID  # an already running one
                                                                 # (needs --metrics and --embeddings)

Each client loops over a weighted mix: streaming and plain completions, OpenAI chat (streaming
and not), embeddings, slot save/restore, bad inputs (each must get its exact 4xx), and abrupt
disconnects (a streaming request dropped with a TCP reset after its first bytes). Every few
seconds it samples the server's RSS, open file descriptors, busy slots and the
``llamacy:http_requests_in_flight`` gauge. At the end it waits for the server to go idle.

Exit status 1 on: any 5xx (but a save/restore finding its slot busy: the spec's 503), any
unexpected status or broken response, a slot or handler still busy after the run (stuck), or a
leak — RSS more than 5 % above its highest level during the warm-up (the first fifth of the run,
and until every kind of request has run twice), or open descriptors growing by more than 16. Only loopback addresses are accepted.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import requests

PROMPTS = ["Write a haiku about the sea.", "List three colours:", "The history of Rome began", "def fibonacci(n):",
           "Q: What is the capital of France?\nA:", "Once upon a time, in a small village,"]
BAD_INPUTS = [  # (path, body, expected status)
    ("/completion", {"prompt": "hi", "temperature": "hot"}, 400),
    ("/completion", {"n_predict": 4}, 400),
    ("/completion", {"prompt": "hi", "grammar": "root ::= ("}, 400),
    ("/completion", {"prompt": "hi", "n_probs": 10_000}, 400),
    ("/completion", {"prompt": [99_999_999]}, 400),
    ("/v1/chat/completions", {"messages": []}, 400),
    ("/v1/embeddings", {"input": 7}, 400),
    ("/tokenize", {"content": 5}, 400),
    ("/slots/0?action=save", {"filename": "../escape.bin"}, 400),
    ("/slots/0?action=nope", {}, 400),
    ("/completion", {"prompt": "hi", "json_schema": {"type": "object", "patternProperties": {}}}, 400),
]
MIX = [("stream", 4), ("complete", 3), ("chat", 2), ("chat_stream", 2), ("embed", 2), ("slots", 1), ("bad", 2),
       ("vanish", 2)]


class Soak:
    def __init__(self, url: str, pid: int, seed: int) -> None:
        self.url = url.rstrip("/")
        self.pid = pid
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.samples: list[dict] = []
        self.stop = threading.Event()

    # --- bookkeeping -------------------------------------------------------------
    def count(self, kind: str, status: int) -> None:
        with self.lock:
            self.counts[(kind, status)] += 1

    def fail(self, message: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(message)

    def check(self, kind: str, r: requests.Response, expected: int = 200) -> bool:
        self.count(kind, r.status_code)
        if r.status_code == expected:
            return True
        if kind == "slots" and r.status_code == 503 and "is busy" in r.text:
            return False   # the spec's answer while the slot serves a request
        self.fail(f"{kind}: {r.status_code} (expected {expected}): {r.text[:200]}")
        return False

    # --- the clients ---------------------------------------------------------------
    def client(self, n: int, session: requests.Session) -> None:
        rng = random.Random(self.rng.random())
        kinds, weights = zip(*MIX)
        while not self.stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            try:
                getattr(self, "do_" + kind)(rng, session, n)
            except Exception as exc:    # a client never dies quietly: whatever it met is a finding
                self.count(kind, -1)
                self.fail(f"{kind}: {type(exc).__name__}: {exc}")

    def do_stream(self, rng, s, n) -> None:
        body = {"prompt": rng.choice(PROMPTS), "n_predict": rng.randint(8, 48), "stream": True,
                "temperature": rng.choice([0, 0.8]), "stop": ["\n\n\n"]}
        with s.post(self.url + "/completion", json=body, stream=True, timeout=300) as r:
            if not self.check("stream", r):
                return
            last = None
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    last = json.loads(line[6:])
            if not (last and last.get("stop") is True and "timings" in last):
                self.fail(f"stream: no final event: {last}")

    def do_complete(self, rng, s, n) -> None:
        body = {"prompt": rng.choice(PROMPTS), "n_predict": rng.randint(4, 32), "cache_prompt": rng.random() < 0.5,
                "n_probs": rng.choice([0, 0, 3])}
        r = s.post(self.url + "/completion", json=body, timeout=300)
        if self.check("complete", r) and "content" not in r.json():
            self.fail("complete: no content")

    def do_chat(self, rng, s, n, stream: bool = False) -> None:
        body = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "max_tokens": rng.randint(4, 32),
                "stream": stream}
        with s.post(self.url + "/v1/chat/completions", json=body, stream=stream, timeout=300) as r:
            kind = "chat_stream" if stream else "chat"
            if not self.check(kind, r):
                return
            if stream:
                lines = [ln for ln in r.iter_lines() if ln.startswith(b"data: ")]
                if not lines or lines[-1] != b"data: [DONE]":
                    self.fail("chat_stream: no [DONE]")
            elif not r.json()["choices"]:
                self.fail("chat: no choices")

    def do_chat_stream(self, rng, s, n) -> None:
        self.do_chat(rng, s, n, stream=True)

    def do_embed(self, rng, s, n) -> None:
        inputs = [rng.choice(PROMPTS) for _ in range(rng.randint(1, 20))]
        r = s.post(self.url + "/v1/embeddings", json={"input": inputs}, timeout=300)
        if self.check("embed", r) and len(r.json()["data"]) != len(inputs):
            self.fail("embed: wrong number of vectors")

    def do_slots(self, rng, s, n) -> None:
        slots = s.get(self.url + "/slots", timeout=60).json()
        idx = rng.randrange(len(slots))
        name = f"soak-{n % 4}.bin"
        r = s.post(f"{self.url}/slots/{idx}?action=save", json={"filename": name}, timeout=300)
        if self.check("slots", r):
            r = s.post(f"{self.url}/slots/{idx}?action=restore", json={"filename": name}, timeout=300)
            self.check("slots", r)

    def do_bad(self, rng, s, n) -> None:
        path, body, status = rng.choice(BAD_INPUTS)
        r = s.post(self.url + path, json=body, timeout=60)
        self.check("bad", r, expected=status)

    def do_vanish(self, rng, s, n) -> None:
        host, port = urllib.parse.urlsplit(self.url).hostname, urllib.parse.urlsplit(self.url).port
        data = json.dumps({"prompt": rng.choice(PROMPTS), "n_predict": 200, "stream": rng.random() < 0.7}).encode()
        sock = socket.create_connection((host, port), timeout=60)
        try:
            sock.sendall(f"POST /completion HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            if rng.random() < 0.7:
                try:
                    sock.recv(1)    # vanish once the answer starts; a queued one may not start within the timeout
                except TimeoutError:
                    pass
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        self.count("vanish", 0)

    # --- sampling ------------------------------------------------------------------
    def every_kind_done(self, n: int) -> bool:
        done: collections.Counter = collections.Counter()
        with self.lock:
            for (kind, _), c in self.counts.items():
                done[kind] += c
        return all(done[kind] >= n for kind, _ in MIX)

    def sample(self) -> dict:
        with open(f"/proc/{self.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        slots = requests.get(self.url + "/slots", timeout=60).json()
        metrics = requests.get(self.url + "/metrics", timeout=60).text
        in_flight = next(float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("llamacy:http_requests_in_flight "))
        deferred = next(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("llamacpp:requests_deferred "))
        return {"t": time.monotonic(), "rss_kib": rss, "fds": fds, "busy_slots": sum(s["state"] for s in slots),
                "in_flight": int(in_flight), "deferred": int(deferred)}

    def run(self, n_clients: int, seconds: float, interval: float) -> int:
        t0 = time.monotonic()
        sessions = [requests.Session() for _ in range(n_clients)]
        threads = [threading.Thread(target=self.client, args=(i, sessions[i]), daemon=True) for i in range(n_clients)]
        for t in threads:
            t.start()
        warm_until = t0 + seconds / 5
        baseline = None     # the highest RSS of the warm-up: its end is also the descriptors' baseline
        warm_rss = 0
        while time.monotonic() - t0 < seconds:
            time.sleep(min(interval, max(0.0, seconds - (time.monotonic() - t0))))
            s = self.sample()
            self.samples.append(s)
            if baseline is None:
                warm_rss = max(warm_rss, s["rss_kib"])
                if s["t"] >= warm_until and self.every_kind_done(2):
                    baseline = {**s, "rss_kib": warm_rss}
            print(f"{s['t'] - t0:8.1f} s  rss {s['rss_kib'] / 1024:8.1f} MiB  fds {s['fds']:4d}  busy slots "
                  f"{s['busy_slots']:2d}  in flight {s['in_flight']:3d}  deferred {s['deferred']:3d}", flush=True)
        self.stop.set()
        for t in threads:
            t.join(timeout=600)
        # the server must come back to rest: no handler, no busy slot, nothing queued
        deadline = time.monotonic() + 120
        while True:
            end = self.sample()
            if end["in_flight"] == 0 and end["busy_slots"] == 0 and end["deferred"] == 0:
                break
            if time.monotonic() > deadline:
                self.fail(f"stuck after the run: {end}")
                break
            time.sleep(0.5)
        if baseline is None:
            self.fail("the run ended before the warm-up did (every kind of request twice): run it longer")
            baseline = {**self.samples[0], "rss_kib": warm_rss}
        growth = end["rss_kib"] / baseline["rss_kib"] - 1
        if growth > 0.05:
            self.fail(f"leak: RSS grew {growth:.1%} after the warm-up ({baseline['rss_kib']} → {end['rss_kib']} KiB)")
        if end["fds"] > baseline["fds"] + 16:
            self.fail(f"leak: open descriptors grew from {baseline['fds']} to {end['fds']}")
        print(f"\n{n_clients} clients, {seconds:.0f} s; requests by kind and status:")
        for (kind, status), n in sorted(self.counts.items()):
            print(f"  {kind:12s} {status:4d}  {n:7d}")
        print(f"RSS at most {baseline['rss_kib'] / 1024:.1f} MiB in the warm-up, at the end {end['rss_kib'] / 1024:.1f} MiB "
              f"({growth:+.2%}); open fds {baseline['fds']} → {end['fds']}")
        if self.failures:
            print(f"\nFAILED ({len(self.failures)} problems, first ones):")
            for f in self.failures[:20]:
                print("  " + f)
            return 1
        print("\nOK: no 5xx, no unexpected status, nothing stuck, no leak")
        return 0


def start_server(args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    save_dir = tempfile.mkdtemp(prefix="llamacy-soak-")
    cmd = [sys.executable, "-m", "llamacy", "--host", "127.0.0.1", "--port", str(port), "-np", str(args.parallel),
           "-c", str(512 * args.parallel), "--embeddings", "--metrics", "--slot-save-path", save_dir,
           "--log-format", "text", "--log-disable", *args.server_args]
    proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(),
                            env={**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an already running server (loopback only); default: start one")
    p.add_argument("--pid", type=int, help="the running server's process id (with --url)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--minutes", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=60.0, help="duration when --minutes is not given")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--parallel", type=int, default=4, help="slots of a server started here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("server_args", nargs="*", help="extra flags for a server started here (after --)")
    args = p.parse_args(argv)
    proc = None
    if args.url:
        host = urllib.parse.urlsplit(args.url).hostname
        if host not in ("127.0.0.1", "::1", "localhost"):
            p.error("--url must be a loopback address")
        if not args.pid:
            p.error("--url needs --pid (to read the server's memory and descriptors)")
        url, pid = args.url, args.pid
    else:
        proc, url = start_server(args)
        pid = proc.pid
    seconds = args.minutes * 60 if args.minutes else args.seconds
    try:
        return Soak(url, pid, args.seed).run(args.clients, seconds, args.interval)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
