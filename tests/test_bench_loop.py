"""tools/bench_loop.py: the server's generation loop at its steady state, in one or more groups
(contexts on their own threads) — every sequence generates exactly its tokens, with and without
a GPU loop's options (which run on a CPU too), and the counters come from every group."""
from __future__ import annotations

import pathlib
import sys

import pytest

from llamacy.engine.model import Model
from llamacy.models import default_model_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import bench_loop  # noqa: E402


@pytest.fixture(scope="module")
def model():
    m = Model(default_model_path())
    yield m
    m.close()


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_every_sequence_generates_its_tokens(model, groups, gpu):
    row = bench_loop.run_loop_bench(model, 4, 6, groups=groups, workload="sampled", gpu=gpu, repeat=2, threads=2)
    assert [r["tokens"] for r in row["runs"]] == [24, 24]
    # each group steps once for the prompts and once for each later token, together as many as it runs
    assert [r["steps"] for r in row["runs"]] == [6 * groups, 6 * groups]
    assert row["groups"] == groups and row["tok_s"] > 0 and row["step_ms"] > 0


def test_sequences_split_evenly_or_not_at_all(model):
    with pytest.raises(ValueError, match="multiple of groups"):
        bench_loop.run_loop_bench(model, 3, 4, groups=2)
    with pytest.raises(ValueError, match="ctx_per_seq"):
        bench_loop.run_loop_bench(model, 2, 300, ctx_per_seq=256)


def test_a_failed_step_reaches_the_caller(model):
    group = bench_loop.Group(model, 2, 256, 2, False)

    def fail(n_tokens):
        raise RuntimeError(f"injected before a decode of {n_tokens} tokens")

    try:
        group.gen.set_fault_hook(fail)
        with pytest.raises(RuntimeError, match="injected before a decode"):
            bench_loop.one_run(model, [group], model.vocab.tokenize(bench_loop.PROMPT), 4,
                               bench_loop.WORKLOADS["greedy"], 1)
    finally:
        group.close()
