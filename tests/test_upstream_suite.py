"""llama.cpp's own server test suite as a regression gate: every test of the committed baseline
(tools/upstream_baseline.txt, the upstream tests llamacy passes) must still pass.

The suite comes from the pinned llama-cpp-python sdist at run time (the engine build's cached
copy, or pip download), runs its non-slow tests against a real llamacy server through
tools/upstream_launcher.py — only the baseline's tests, so this takes minutes, not the whole
suite's time. ``python tools/upstream_suite.py`` runs everything and prints the table."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import upstream_suite  # noqa: E402


def test_the_baseline_is_not_empty_and_names_known_files():
    baseline = upstream_suite.read_list(upstream_suite.BASELINE)
    assert len(baseline) >= 20
    files = {f"test_{f}.py" for f in upstream_suite.FILES}
    assert {t.split("::", 1)[0] for t in baseline} <= files


def test_regressions_count_a_test_that_did_not_run():
    baseline = {"test_a.py::x", "test_a.py::y", "test_a.py::z"}
    assert upstream_suite.regressions(baseline, {"test_a.py::x": "passed", "test_a.py::y": "failed"}) == \
        ["test_a.py::y", "test_a.py::z"]


def test_every_baseline_test_of_the_upstream_suite_passes():
    baseline = upstream_suite.read_list(upstream_suite.BASELINE)
    outcomes = upstream_suite.run_suite("llamacy", list(upstream_suite.FILES), None, False, only=baseline)
    lost = upstream_suite.regressions(baseline, outcomes)
    assert not lost, (f"{len(lost)} upstream tests of the baseline no longer pass (run "
                      f"`python tools/upstream_suite.py -v -k NAME` to see why):\n" + "\n".join(lost))


def test_launcher_maps_agent_flags_to_the_localhost_cors_policy():
    import upstream_launcher
    assert upstream_launcher.llamacy_args(["--tools", "all", "--port", "8"]) == \
        ["--cors-origins", "localhost", "--port", "8"]
    assert upstream_launcher.llamacy_args(["--tools", "all", "--cors-origins", "*"]) == ["--cors-origins", "*"]
    assert upstream_launcher.llamacy_args(["--ui-mcp-proxy", "--cors-origins", "localhost"]) == \
        ["--ui-mcp-proxy", "--cors-origins", "localhost"]
