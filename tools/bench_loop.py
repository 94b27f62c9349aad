#!/usr/bin/env python3
"""The server's generation loop at its steady state: the speed it holds without HTTP, arrivals
or ends.

Every sequence gets the same prompt and generates exactly ``--n-predict`` tokens (end of
generation ignored), all started together, in ``engine.generation.Generator`` — the C loop the
server runs, with the options the server gives it on this machine (on a GPU: throw-away tokens,
the stable shape, device top-k and device greedy; on a CPU none of them). What it reports,
against llama-batched-bench's S_TG at the same number of sequences, is the loop's own cost per
step; what ``tools/bench_server.py`` measures beyond it is the workload's (requests arriving and
ending, prompts, HTTP).

``--groups G`` splits the sequences over G contexts (G KV caches, one model), each loop on its
own thread: one group's host work then overlaps the other groups' device work (the design
"two slot groups"; the server runs one).

    python tools/bench_loop.py --parallel 64,128 --groups 1,2 --workload sampled -ngl 99
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
try:  # an installed llamacy first; else a source tree built in place
    import llamacy.engine.model  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_ROOT))

from llamacy.engine import backends  # noqa: E402
from llamacy.engine.context import Context  # noqa: E402
from llamacy.engine.device_sampling import DeviceSampling  # noqa: E402
from llamacy.engine.generation import ENTRY_TOKEN, RUN_ERROR, Generator  # noqa: E402
from llamacy.engine.model import Model  # noqa: E402
from llamacy.engine.sampling import Sampler  # noqa: E402
from llamacy.engine.sampling_params import SamplingParams  # noqa: E402
from llamacy.engine.step_outputs import GPU_ROWS_PER_THREAD, ROWS_PER_THREAD  # noqa: E402
from llamacy.models import default_model_path  # noqa: E402
from llamacy.server.state import DEVICE_GREEDY_SLOTS, DEVICE_TOP_K  # noqa: E402

from bench_engine import positive_int_list  # noqa: E402  (tools/, this script's directory)

PROMPT = "Write a short story about a robot learning to paint."
# the two workloads of ../shared/bench/loadgen.py, every request to its full length
WORKLOADS = {
    "greedy": dict(temperature=0.0, ignore_eos=True),
    "sampled": dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64,
                    ignore_eos=True),
}
COUNTERS = ("steps", "decode_seconds", "sync_seconds", "sample_seconds")


class Group:
    """One context and its loop, with the server's loop options for this machine."""

    def __init__(self, model: Model, n_seq: int, ctx_per_seq: int, n_threads: int, gpu: bool) -> None:
        self.n_seq = n_seq
        self.ctx = Context(model, n_ctx=n_seq * ctx_per_seq, n_batch=2048, n_ubatch=512, n_seq_max=n_seq,
                           flash_attn=True, n_threads=n_threads, n_threads_batch=n_threads)
        # as the server's Scheduler builds it with --backend-sampling auto
        device = (DeviceSampling(self.ctx, n_seq, DEVICE_TOP_K, attach=False, greedy_slots=DEVICE_GREEDY_SLOTS)
                  if gpu else None)
        vocab = model.vocab
        self.gen = Generator(self.ctx, n_seq, 2048, vocab.pieces, vocab.eog_tokens(), pad_gaps=gpu, device=device,
                             device_auto=gpu, rows_per_thread=GPU_ROWS_PER_THREAD if gpu else ROWS_PER_THREAD)
        if gpu:
            self.gen.warm_up()
        self.tokens = 0

    def drain(self) -> None:
        for *_, entries in self.gen.drain():
            self.tokens += sum(1 for kind, _, value, *_ in entries if kind == ENTRY_TOKEN and value >= 0)

    def close(self) -> None:
        self.ctx.close()


def one_run(model: Model, groups: list[Group], prompt: list[int], n_predict: int, params: dict, seed: int) -> dict:
    """All sequences of all groups from ``prompt`` to ``n_predict`` tokens; tokens/s and the
    loops' counters (summed over the groups)."""
    before = [dict(g.gen.counters) for g in groups]
    for i, g in enumerate(groups):
        g.tokens = 0
        for s in range(g.n_seq):
            sampler = Sampler(model, SamplingParams(seed=seed + 1000 * i + s, **params))
            g.gen.add(s, sampler, prompt, 0, g.ctx.n_ctx_seq, 0, n_predict)
    errors: list[BaseException] = []

    def loop(g: Group) -> None:
        try:
            if g.gen.run() == RUN_ERROR:
                errors.append(g.gen.failed_step()[0])
        except BaseException as exc:      # reaches the caller below
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for g in groups:
            g.drain()
        time.sleep(0.0005)
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = {"tokens": 0, "wall_s": wall, **{k: 0.0 for k in COUNTERS}}
    for g, b in zip(groups, before):
        g.drain()
        out["tokens"] += g.tokens
        after = g.gen.counters
        for k in COUNTERS:
            out[k] += after[k] - b[k]
        for s in range(g.n_seq):
            g.gen.release(s, True)
        g.ctx.seq_rm(-1, -1, -1)
    out["tok_s"] = out["tokens"] / wall
    return out


def run_loop_bench(model: Model, parallel: int, n_predict: int = 128, *, groups: int = 1, workload: str = "greedy",
                   gpu: bool = False, repeat: int = 3, ctx_per_seq: int = 256, threads: int | None = None) -> dict:
    """The loop's steady state at ``parallel`` sequences over ``groups`` contexts, with a GPU
    loop's options when ``gpu``: medians of ``repeat`` runs after one warm run. Per step (of one
    group: the groups step side by side): its milliseconds, and the part in llama_decode,
    waiting for the device and sampling."""
    if parallel < 1 or groups < 1 or parallel % groups or n_predict < 1 or repeat < 1:
        raise ValueError("parallel a positive multiple of groups; n_predict and repeat at least 1")
    prompt = model.vocab.tokenize(PROMPT)
    if len(prompt) + n_predict > ctx_per_seq:
        raise ValueError(f"the prompt ({len(prompt)} tokens) and n_predict must fit ctx_per_seq {ctx_per_seq}")
    cores = threads if threads and threads > 0 else os.cpu_count() or 1
    made: list[Group] = []
    try:
        for _ in range(groups):
            made.append(Group(model, parallel // groups, ctx_per_seq, max(1, cores // groups), gpu))
        one_run(model, made, prompt, n_predict, WORKLOADS[workload], 1)
        runs = [one_run(model, made, prompt, n_predict, WORKLOADS[workload], 7 + r) for r in range(repeat)]
    finally:
        for g in made:
            g.close()
    steps = [r["steps"] / groups for r in runs]
    return {"parallel": parallel, "groups": groups, "workload": workload, "gpu": gpu, "runs": runs,
            "tokens": runs[0]["tokens"], "tok_s": statistics.median(r["tok_s"] for r in runs),
            "step_ms": statistics.median(1e3 * r["wall_s"] / n for r, n in zip(runs, steps)),
            **{k.split("_")[0] + "_ms": statistics.median(1e3 * r[k] / r["steps"] for r in runs)
               for k in COUNTERS[1:]}}


def format_table(rows: list[dict]) -> str:
    lines = ["| workload | sequences | groups | tok/s | ms a step | llama_decode ms | device sync ms | sampling ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['parallel']} | {r['groups']} | {r['tok_s']:.0f} | {r['step_ms']:.2f} "
                     f"| {r['decode_ms']:.2f} | {r['sync_ms']:.2f} | {r['sample_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:    # a GPU backend needs libstdc++ preloaded (llamacy.cxx_runtime)
        from llamacy.cxx_runtime import reexec_with_cxx_runtime
        reexec_with_cxx_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=None, help="GGUF model (default: the SmolLM2-135M package model)")
    ap.add_argument("--parallel", type=positive_int_list, default=[1, 8, 64], help="sequences, comma-separated")
    ap.add_argument("--groups", type=positive_int_list, default=[1], help="contexts the sequences are split over")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="greedy")
    ap.add_argument("--n-predict", type=int, default=128, help="tokens generated per sequence")
    ap.add_argument("--ctx-per-seq", type=int, default=256, help="each sequence's context, as -c / -np")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row (the median is reported)")
    ap.add_argument("--threads", "-t", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--n-gpu-layers", "-ngl", type=int, default=0)
    args = ap.parse_args(argv)
    model = Model(args.model or default_model_path(), n_gpu_layers=args.n_gpu_layers)
    gpu = args.n_gpu_layers != 0 and bool(backends.gpu_devices())
    rows = []
    for p in args.parallel:
        for g in args.groups:
            if p % g == 0:
                rows.append(run_loop_bench(model, p, args.n_predict, groups=g, workload=args.workload, gpu=gpu,
                                           repeat=args.repeat, ctx_per_seq=args.ctx_per_seq, threads=args.threads))
                print(f"  {p} sequences in {g} group(s): {rows[-1]['tok_s']:.0f} tok/s", file=sys.stderr, flush=True)
    print(format_table(rows))
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
