#!/usr/bin/env python3
"""Raw engine loop benchmark: the speed limit the server is held to.

For each parallelism P, P sequences each get their own prompt of ``--prompt-tokens`` tokens,
all prefilled in one batch; then every step decodes one Batch holding one token per sequence
and samples all sequences with a single ``sample_batch`` call (greedy, the fast path) — the
same shape of loop as the server's, without HTTP, JSON, scheduling or detokenization.
Reports aggregate prompt and generation throughput, medians over ``--repeat`` runs.

    python tools/bench_engine.py --parallel 1,4,16,64 --n-predict 64 --repeat 3

``tools/bench_server.py`` can reuse ``run_engine_bench`` (tools/ is not a package)::

    spec = importlib.util.spec_from_file_location("bench_engine", Path(__file__).with_name("bench_engine.py"))
    bench_engine = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench_engine)
    row = bench_engine.run_engine_bench(model_path, parallel=4, prompt_tokens=32, n_predict=64, repeat=3, threads=None)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
try:  # an installed llamacy first; else a source tree built in place
    import llamacy.engine.model  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_ROOT))

from llamacy.engine.context import Batch, Context  # noqa: E402
from llamacy.engine.model import Model, system_info  # noqa: E402
from llamacy.engine.sampling import Sampler, sample_batch  # noqa: E402
from llamacy.engine.sampling_params import SamplingParams  # noqa: E402
from llamacy.models import default_model_path  # noqa: E402

_TEXT = (
    "The history of the printing press begins in the fifteenth century, when movable type made it possible "
    "to reproduce books quickly and cheaply. Within a few decades presses were running in every major city, "
    "and the spread of pamphlets, maps and scientific treatises changed how people learned, argued and traded. "
)


def greedy_params() -> SamplingParams:
    """What a benchmark client asks for: argmax, no repetition penalty, never stop early."""
    return SamplingParams(temperature=0.0, repeat_penalty=1.0, ignore_eos=True)


def make_prompts(vocab, parallel: int, prompt_tokens: int) -> list[list[int]]:
    """One distinct prompt of exactly ``prompt_tokens`` tokens per sequence."""
    if prompt_tokens < 1:
        raise ValueError("prompt_tokens must be at least 1")
    prompts = []
    for k in range(parallel):
        text = f"Request {k}: summarise the following. " + _TEXT
        toks = vocab.tokenize(text, add_special=True)
        while len(toks) < prompt_tokens:
            toks += vocab.tokenize(_TEXT)
        prompts.append(toks[:prompt_tokens])
    return prompts


def _one_run(ctx: Context, model: Model, prompts: list[list[int]], n_predict: int,
             params: SamplingParams) -> dict:
    parallel = len(prompts)
    ctx.memory_clear()
    samplers = [Sampler(model, params) for _ in range(parallel)]
    prompt_batch = Batch(sum(len(p) for p in prompts), 1)
    step_batch = Batch(parallel, 1)
    step_idx = list(range(parallel))  # one output per sequence, in sequence order
    pos = [len(p) for p in prompts]
    t_decode = t_sample = 0.0

    t0 = time.perf_counter()
    idx = [prompt_batch.add_sequence(p, 0, s) for s, p in enumerate(prompts)]
    ctx.decode(prompt_batch)
    t1 = time.perf_counter()

    toks = sample_batch(ctx, samplers, idx)
    t_sample += time.perf_counter() - t1
    for _ in range(n_predict - 1):
        step_batch.clear()
        for s in range(parallel):
            step_batch.add(toks[s], pos[s], s, True)
            pos[s] += 1
        ta = time.perf_counter()
        ctx.decode(step_batch)
        tb = time.perf_counter()
        toks = sample_batch(ctx, samplers, step_idx)
        tc = time.perf_counter()
        t_decode += tb - ta
        t_sample += tc - tb
    t2 = time.perf_counter()

    n_prompt = sum(len(p) for p in prompts)
    n_gen = parallel * n_predict
    steps = max(n_predict - 1, 1)
    return {
        "prompt_s": t1 - t0,
        "gen_s": t2 - t1,
        "prompt_tok_s": n_prompt / (t1 - t0),
        "gen_tok_s": n_gen / (t2 - t1),
        "decode_ms_per_step": 1e3 * t_decode / steps,
        "sample_us_per_step": 1e6 * t_sample / n_predict,
        "other_us_per_step": 1e6 * max(0.0, (t2 - t1) - t_decode - t_sample) / steps,
    }


def run_engine_bench(model_path, parallel: int, prompt_tokens: int = 32, n_predict: int = 64, repeat: int = 3,
                     threads: int | None = None, *, n_gpu_layers: int = 0, flash_attn: bool = False,
                     params: SamplingParams | None = None, warmup: bool = True) -> dict:
    """Benchmark the raw engine loop at one parallelism; medians over ``repeat`` runs.

    ``model_path`` is a GGUF path or an already loaded ``Model`` (then ``n_gpu_layers`` is
    ignored). ``threads`` None or <= 0 uses the Context default (all cores).
    """
    if parallel < 1 or n_predict < 1 or repeat < 1:
        raise ValueError("parallel, n_predict and repeat must be at least 1")
    model = model_path if isinstance(model_path, Model) else Model(model_path, n_gpu_layers=n_gpu_layers)
    params = params or greedy_params()
    n_threads = threads if threads and threads > 0 else -1
    ctx = Context(model, n_ctx=parallel * (prompt_tokens + n_predict + 16), n_seq_max=parallel,
                  n_batch=max(512, parallel * prompt_tokens), kv_unified=False, n_threads=n_threads,
                  n_threads_batch=n_threads, flash_attn=flash_attn)
    try:
        prompts = make_prompts(model.vocab, parallel, prompt_tokens)
        if warmup:
            _one_run(ctx, model, prompts, min(n_predict, 4), params)
        runs = [_one_run(ctx, model, prompts, n_predict, params) for _ in range(repeat)]
    finally:
        ctx.close()
    result = {"parallel": parallel, "prompt_tokens": prompt_tokens, "n_predict": n_predict, "repeat": repeat,
              "threads": threads, "n_gpu_layers": n_gpu_layers, "runs": runs}
    for key in runs[0]:
        result[key] = statistics.median(r[key] for r in runs)
    return result


def format_table(rows: list[dict]) -> str:
    head = ("| parallel | prompt tok/s | gen tok/s | gen tok/s per seq | decode ms/step | sample µs/step "
            "| other µs/step |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['parallel']} | {r['prompt_tok_s']:.0f} | {r['gen_tok_s']:.1f} "
                     f"| {r['gen_tok_s'] / r['parallel']:.1f} | {r['decode_ms_per_step']:.2f} "
                     f"| {r['sample_us_per_step']:.0f} | {r['other_us_per_step']:.0f} |")
    return "\n".join(lines)


def positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers (also bench_loop.py's)."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("values must be positive")
    return vals


def main(argv: list[str] | None = None) -> int:
    if argv is None:    # a GPU backend needs libstdc++ preloaded (llamacy.cxx_runtime)
        from llamacy.cxx_runtime import reexec_with_cxx_runtime
        reexec_with_cxx_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=None, help="GGUF model (default: the SmolLM2-135M package model)")
    ap.add_argument("--parallel", type=positive_int_list, default=[1, 4, 16, 64], help="comma-separated, e.g. 1,4,16,64")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length of each sequence")
    ap.add_argument("--n-predict", type=int, default=64, help="tokens generated per sequence")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row (the median is reported)")
    ap.add_argument("--threads", "-t", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--n-gpu-layers", "-ngl", type=int, default=0)
    ap.add_argument("--flash-attn", "-fa", action="store_true")
    ap.add_argument("--repeat-penalty", type=float, default=1.0,
                    help="> 1 adds the repetition-penalty sampler to the greedy fast path")
    ap.add_argument("--json", metavar="PATH", help="also write every result (all runs) to this JSON file")
    args = ap.parse_args(argv)

    path = args.model or default_model_path()
    model = Model(path, n_gpu_layers=args.n_gpu_layers)
    params = SamplingParams(temperature=0.0, repeat_penalty=args.repeat_penalty, ignore_eos=True)
    print(f"model: {os.path.basename(path)} ({model.desc}), threads: {args.threads or os.cpu_count()}, "
          f"n_gpu_layers: {args.n_gpu_layers}, prompt: {args.prompt_tokens} tok/seq, "
          f"n_predict: {args.n_predict}, repeat: {args.repeat} (median)", flush=True)
    rows = []
    for p in args.parallel:
        rows.append(run_engine_bench(model, p, args.prompt_tokens, args.n_predict, args.repeat, args.threads,
                                     flash_attn=args.flash_attn, params=params))
        print(f"  parallel {p}: done", file=sys.stderr, flush=True)
    print()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": path, "system_info": system_info(), "rows": rows}, f, indent=1)
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
