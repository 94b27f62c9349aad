#!/usr/bin/env python3
"""Server benchmark: concurrent streaming clients against a real llamacy process, next to the
raw engine loop (tools/bench_engine.py) at the same parallelism, measured in the same run.

For each parallelism P: start ``llamacy -np P`` on a free loopback port with a context big
enough for P requests, then P clients (asyncio, raw HTTP/1.1, light on CPU) each stream one
/completion of ``--n-predict`` tokens (greedy, ignore_eos, repeat_penalty 1 — the engine
bench's settings), all started together. Reports aggregate generated tok/s (all tokens over
the wall time from the first request to the last final event, so prefill included), mean and
p99 time to first token, and the ratio to the engine loop measured the same way (prefill +
generation wall time). Medians over ``--repeat`` rounds.

    python tools/bench_server.py --parallel 1,4,16,64 --n-predict 64 --repeat 3
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

_TOOLS = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_engine", _TOOLS / "bench_engine.py")
bench_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_engine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(parallel: int, n_ctx: int, threads: int | None, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "llamacy", "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
           "-c", str(n_ctx), "-b", "512", "--log-disable", *extra]
    if threads:
        cmd += ["-t", str(threads)]
    proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def stream_one(port: int, prompt: list[int], n_predict: int) -> tuple[float, int, float]:
    """One streaming /completion: (time to first token, tokens predicted, end time)."""
    body = json.dumps({"prompt": prompt, "n_predict": n_predict, "temperature": 0, "repeat_penalty": 1.0,
                       "ignore_eos": True, "stream": True, "cache_prompt": False}).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    ttft = None
    n_pred = 0
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        if ttft is None and b"data: " in chunk:
            ttft = time.perf_counter() - t0
        buf += chunk
        if b'"stop":true' in buf:
            tail = buf[buf.rfind(b"data: ") + 6:].split(b"\n\n")[0]
            try:
                n_pred = json.loads(tail)["tokens_predicted"]
                break
            except (ValueError, KeyError):
                continue
    t_end = time.perf_counter()
    writer.close()
    return ttft or 0.0, n_pred, t_end


async def one_round(port: int, prompts: list[list[int]], n_predict: int) -> dict:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(stream_one(port, p, n_predict) for p in prompts))
    t_last = max(r[2] for r in results)
    ttfts = sorted(r[0] for r in results)
    n_gen = sum(r[1] for r in results)
    if n_gen != len(prompts) * n_predict:
        raise RuntimeError(f"expected {len(prompts) * n_predict} tokens, got {n_gen}")
    p99 = ttfts[min(len(ttfts) - 1, int(round(0.99 * (len(ttfts) - 1))))]
    return {"gen_tok_s": n_gen / (t_last - t0), "ttft_mean_ms": 1e3 * statistics.mean(ttfts),
            "ttft_p99_ms": 1e3 * p99}


def run_server_bench(model, parallel: int, prompt_tokens: int, n_predict: int, repeat: int,
                     threads: int | None, extra: list[str]) -> dict:
    prompts = bench_engine.make_prompts(model.vocab, parallel, prompt_tokens)
    n_ctx = parallel * (prompt_tokens + n_predict + 16)
    proc, port = start_server(parallel, max(n_ctx, 256), threads, extra)
    try:
        asyncio.run(one_round(port, prompts, min(n_predict, 4)))  # warm-up
        runs = [asyncio.run(one_round(port, prompts, n_predict)) for _ in range(repeat)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=None)
    ap.add_argument("--parallel", default="1,4,16,64")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", "-t", type=int, default=None)
    ap.add_argument("--n-gpu-layers", "-ngl", type=int, default=0, help="layers offloaded (engine and server)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for the server (repeatable)")
    args = ap.parse_args(argv)
    model_path = args.model or bench_engine.default_model_path()
    model = bench_engine.Model(model_path, n_gpu_layers=args.n_gpu_layers)
    rows = []
    for p in [int(x) for x in args.parallel.split(",")]:
        eng = bench_engine.run_engine_bench(model, p, args.prompt_tokens, args.n_predict, args.repeat, args.threads)
        srv = run_server_bench(model, p, args.prompt_tokens, args.n_predict, args.repeat, args.threads,
                               ["-m", model_path, "-ngl", str(args.n_gpu_layers), *args.server_arg])
        # end to end on both sides: prefill + generation of every sequence, over the wall time
        eng_tok_s = p * args.n_predict / (eng["prompt_s"] + eng["gen_s"])
        rows.append((p, eng_tok_s, srv["gen_tok_s"], srv["ttft_mean_ms"], srv["ttft_p99_ms"]))
        print(f"P={p}: engine {eng_tok_s:.1f} tok/s, server {srv['gen_tok_s']:.1f} tok/s", file=sys.stderr)
    print(f"model: {os.path.basename(model_path)}, prompt {args.prompt_tokens} tokens, "
          f"n_predict {args.n_predict}, medians of {args.repeat}")
    print("| clients | engine gen tok/s | server gen tok/s | server/engine | TTFT mean ms | TTFT p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p, e, s, tm, tp in rows:
        print(f"| {p} | {e:.1f} | {s:.1f} | {s / e:.3f} | {tm:.1f} | {tp:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
