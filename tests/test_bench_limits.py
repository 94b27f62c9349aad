"""tools/bench_server.py's limits: the engine's step time at a batch size from batched-bench's
S_TG, and the workload limit — an ideal server on that engine with a run's request lengths and
arrivals."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import bench_server  # noqa: E402

S_TG = {1: 100.0, 8: 400.0, 64: 1600.0}


def test_step_time_is_interpolated_between_measured_batches():
    step = bench_server.step_seconds(S_TG)
    assert step(1) == pytest.approx(0.01)
    assert step(8) == pytest.approx(0.02)
    assert step(4) == pytest.approx(0.01 + 0.01 * 3 / 7)
    assert step(36) == pytest.approx(0.02 + 0.02 * 28 / 56)
    assert step(128) == pytest.approx(0.08)      # beyond the largest batch: the same tokens/s


def test_equal_requests_together_reach_batched_bench():
    step = bench_server.step_seconds(S_TG)
    assert bench_server.workload_limit([[64, 64]] * 8, [0.0] * 8, step) == pytest.approx(400.0)


def test_a_tail_and_late_arrivals_lower_the_limit():
    step = bench_server.step_seconds(S_TG)
    # one client runs 10 steps alone after the other 7 stop: 70 steps at batch 8, 10 at batch 1
    tokens = [[40, 40]] + [[35, 35]] * 7
    assert bench_server.workload_limit(tokens, [0.0] * 8, step) == pytest.approx(570 / (70 * 0.02 + 10 * 0.01))
    # a client arriving after 0.045 s: 5 steps alone for the first, then both at batch 2
    t2 = 0.01 + 0.01 / 7
    expected = 20 / (5 * 0.01 + 5 * t2 + 5 * 0.01)
    assert bench_server.workload_limit([[10], [5, 5]], [0.0, 0.045], step) == pytest.approx(expected)


def test_repeated_runs_report_the_median_run_and_the_ratio_range():
    key = ("greedy", 4)
    ours = [{key: {"tok_s": t, "ttft_ms": t / 10}} for t in (90.0, 130.0, 110.0)]
    ref = [{key: {"tok_s": t, "ttft_ms": 0.0}} for t in (100.0, 100.0, 120.0)]
    assert bench_server.median_runs(ours)[key] == {"tok_s": 110.0, "ttft_ms": 11.0}    # the whole middle run
    assert bench_server.median_runs(ours[:2])[key]["tok_s"] == 90.0                     # even: the lower middle
    low, high = bench_server.ratio_range(ours, ref, key)
    assert (low, high) == (pytest.approx(0.9), pytest.approx(1.3))
