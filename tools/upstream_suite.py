#!/usr/bin/env python3
"""llama.cpp's own server test suite as a yardstick: its non-slow tests against llamacy and,
side by side, against llama.cpp's llama-server built from the same pinned tree.

The suite (``tools/server/tests`` of the pinned llama-cpp-python sdist, with the chat templates
it reads from ``models/templates``) is unpacked at run time into a cache folder — never copied
into this repository. Its servers are started through tools/upstream_launcher.py, which puts
local models in place of its Hugging Face downloads (the default SmolLM2 model; the generated
FIM model and reranker of tools/make_test_gguf.py where a test needs those) and maps today's
llama-server flags onto llamacy's.

    python tools/upstream_suite.py                      # llamacy; the table beside the reference
    python tools/upstream_suite.py --target both        # also run llama-server (built once, cached)
    python tools/upstream_suite.py --check              # exit 1 if a test of the baseline fails
    python tools/upstream_suite.py --baseline-only --check   # CI: only the baseline's tests (minutes)
    python tools/upstream_suite.py --update-baseline    # write what passes now as the baseline

``tools/upstream_baseline.txt`` lists the tests llamacy passes (CI fails when one of them stops
passing); ``tools/upstream_reference.txt`` lists those llama-server passed on the same models
(``--target llama-server --update-reference``), so the table needs no llama-server build.
The reference llama-server runs with ``--no-repack`` (``--llama-server-flags``): the weights stay
in the file's layout, as llamacy's engine loads them here.
"""
from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tools" / "upstream_baseline.txt"
REFERENCE = ROOT / "tools" / "upstream_reference.txt"
FILES = ("basic", "completion", "tokenize", "chat_completion", "embedding", "slot_save", "metrics", "security",
         "ctx_shift", "stream", "ignore_eos", "infill", "template", "tool_call", "rerank", "compat_anthropic",
         "compat_oai_responses")
# what the suite needs from the engine tree: its tests, the chat templates and the media they read
EXTRACT = ("tools/server/tests/", "models/templates/", "tools/mtmd/test-1.jpeg")
FIM_TOKENS = "3,4,5"    # three special tokens of the SmolLM2 vocab, declared as FIM tokens
SUITE_TIMEOUT_S = 3600


def cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "llamacy" / "upstream-suite"


def engine_module():
    sys.path.insert(0, str(ROOT / "build_backend"))
    from llamacy_build import engine
    return engine


def unpack_suite(work: Path) -> Path:
    """The pinned sdist's llama.cpp files the suite needs, unpacked under ``work`` (once per
    version); returns the suite's folder (``tools/server/tests``)."""
    engine = engine_module()
    pin = engine.read_pin()
    tree = work / pin.version / "llama.cpp"
    tests = tree / "tools" / "server" / "tests"
    if (tests / "unit").is_dir():
        return tests
    sdist = engine.fetch_sdist(pin, engine.cache_root())
    partial = work / pin.version / "partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/", 1)[0]
        base = f"{top}/vendor/llama.cpp/"
        wanted = [m for m in tar.getmembers()
                  if m.name.startswith(base) and m.name[len(base):].startswith(EXTRACT) and (m.isfile() or m.isdir())]
        for m in wanted:
            m.name = m.name[len(base):]
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(partial, members=wanted, **kw)
    shutil.rmtree(tree, ignore_errors=True)
    os.replace(partial, tree)
    return tests


def test_models(work: Path) -> dict[str, str]:
    """The local models standing in for the suite's downloads (made once)."""
    from llamacy.models import default_model_path
    default = default_model_path()
    out = {"UPSTREAM_MODEL_DEFAULT": default}
    for key, name, extra in (("UPSTREAM_MODEL_FIM", "fim.gguf", ["--source", default, "--fim", FIM_TOKENS]),
                             ("UPSTREAM_MODEL_RERANK", "rerank.gguf", ["--reranker"])):
        path = work / name
        if not path.is_file():
            tmp = work / f"{name}.tmp"
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_test_gguf.py"), str(tmp), *extra], check=True,
                           stdout=subprocess.DEVNULL)
            os.replace(tmp, path)
        out[key] = str(path)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(work: Path, target: str, llama_server_flags: list[str]) -> Path:
    """An executable the suite can start as its server: tools/upstream_launcher.py for ``target``."""
    cmd = [sys.executable, str(ROOT / "tools" / "upstream_launcher.py"), "--target", target]
    extra: list[str] = []
    if target == "llama-server":
        sys.path.insert(0, str(ROOT / "tools"))
        from bench_server import llama_tools
        cmd += ["--llama-server", str(llama_tools(("llama-server",)) / "llama-server")]
        extra = llama_server_flags
    path = work / f"launch-{target}.sh"
    quoted = " ".join(shlex.quote(c) for c in cmd)
    path.write_text(f"#!/bin/sh\nexec {quoted} -- \"$@\" {' '.join(shlex.quote(f) for f in extra)}\n")
    path.chmod(0o755)
    return path


def run_suite(target: str, files: list[str], keyword: str | None, verbose: bool, *,
              only: set[str] | None = None, llama_server_flags: list[str] = ()) -> dict[str, str]:
    """Run the suite's non-slow tests of ``files`` (only those in ``only``, if given) against
    ``target``: {test id: outcome}."""
    work = cache_dir()
    work.mkdir(parents=True, exist_ok=True)
    tests = unpack_suite(work)
    import llamacy
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(llamacy.__file__)))
    env = {**os.environ, **test_models(work),
           "LLAMA_SERVER_BIN_PATH": str(launcher(work, target, list(llama_server_flags))),
           "PORT": str(free_port()), "LLAMA_CACHE": str(work / "hf-cache"),
           # the launcher's `python -m llamacy` runs the llamacy this script imports; tools/ holds
           # the selection plugin
           "PYTHONPATH": os.pathsep.join([package_root, str(ROOT / "tools")])}
    for var in ("DEBUG", "DEBUG_EXTERNAL", "SLOW_TESTS", "N_GPU_LAYERS"):
        env.pop(var, None)
    report = work / f"report-{target}.xml"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-p", "no:cacheprovider", f"--junitxml={report}",
           "-o", "junit_family=xunit1", "-q" if not verbose else "-v", "--tb=line" if not verbose else "--tb=short",
           *[f"unit/test_{f}.py" for f in files]]
    if keyword:
        cmd += ["-k", keyword]
    if only is not None:
        selection = work / f"select-{target}.txt"
        selection.write_text("".join(f"{t}\n" for t in sorted(only)))
        env["UPSTREAM_SELECT"] = str(selection)
        cmd += ["-p", "upstream_select"]
    print(f"[upstream] {target}: {' '.join(cmd[1:])}  (in {tests})", file=sys.stderr, flush=True)
    out = None if verbose else subprocess.DEVNULL
    try:
        subprocess.run(cmd, cwd=tests, env=env, stdout=out, stderr=out, timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"[upstream] {target}: the suite ran past {SUITE_TIMEOUT_S} s", file=sys.stderr)
    if not report.is_file():
        raise RuntimeError(f"the suite wrote no report for {target}")
    return read_report(report)


def read_report(path: Path) -> dict[str, str]:
    """A JUnit XML report → {``test_FILE.py::name[params]``: passed | failed | skipped}."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        if not module.startswith("test_"):
            continue
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        out[f"{module}.py::{case.get('name')}"] = outcome
    return out


def read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def write_list(path: Path, ids: set[str], what: str) -> None:
    header = (f"# {what}\n# written by tools/upstream_suite.py; one test id a line\n")
    path.write_text(header + "".join(f"{i}\n" for i in sorted(ids)))


def regressions(baseline: set[str], outcomes: dict[str, str]) -> list[str]:
    """Tests of the baseline that did not pass (a test that did not run at all counts)."""
    return sorted(t for t in baseline if outcomes.get(t) != "passed")


def table(results: dict[str, dict[str, str]], reference: set[str] | None) -> str:
    """The per-file table: passed/failed for each server, llama-server's from ``reference`` when
    it did not run here."""
    columns = list(results)
    ids = set().union(*(r.keys() for r in results.values()))
    if reference is not None and "llama-server" not in results:
        columns = ["llama-server (reference)", *columns]
    rows = collections.defaultdict(lambda: collections.Counter())
    for tid in ids:
        f = tid.split("::", 1)[0]
        for col in columns:
            if col == "llama-server (reference)":
                outcome = "passed" if tid in reference else "failed"
            else:
                outcome = results[col].get(tid, "")
            if outcome:
                rows[f][(col, outcome)] += 1
    head = "| file | " + " | ".join(f"{c} passed | {c} failed" for c in columns) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(columns)]
    totals = collections.Counter()
    for f in sorted(rows):
        cells = []
        for col in columns:
            p, x = rows[f][(col, "passed")], rows[f][(col, "failed")]
            totals[(col, "passed")] += p
            totals[(col, "failed")] += x
            cells += [str(p), str(x)]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    cells = []
    for col in columns:
        cells += [f"**{totals[(col, 'passed')]}**", f"**{totals[(col, 'failed')]}**"]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["llamacy", "llama-server", "both"], default="llamacy")
    ap.add_argument("--files", default=",".join(FILES), help="comma-separated suite files (basic, completion, ...)")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression")
    ap.add_argument("--check", action="store_true", help="exit 1 if a test of the baseline does not pass on llamacy")
    ap.add_argument("--update-baseline", action="store_true", help="write llamacy's passing tests as the baseline")
    ap.add_argument("--update-reference", action="store_true", help="write llama-server's passing tests")
    ap.add_argument("--baseline-only", action="store_true",
                    help="run only the baseline's tests (what CI needs to find a regression)")
    ap.add_argument("--llama-server-flags", default="--no-repack",
                    help="extra flags for the reference llama-server (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    a = ap.parse_args(argv)
    files = [f.strip() for f in a.files.split(",") if f.strip()]
    unknown = [f for f in files if f not in FILES]
    if unknown:
        ap.error(f"unknown suite file(s) {', '.join(unknown)}; known: {', '.join(FILES)}")
    targets = ["llama-server", "llamacy"] if a.target == "both" else [a.target]
    only = read_list(BASELINE) if a.baseline_only else None
    results = {t: run_suite(t, files, a.keyword, a.verbose, only=only,
                            llama_server_flags=shlex.split(a.llama_server_flags)) for t in targets}
    reference = read_list(REFERENCE)
    print(table(results, reference if REFERENCE.is_file() else None))
    if "llama-server" in results and a.update_reference:
        write_list(REFERENCE, {t for t, o in results["llama-server"].items() if o == "passed"},
                   "tests of llama.cpp's suite that llama-server (same engine tree, same models) passes")
    code = 0
    mine = results.get("llamacy")
    if mine is not None:
        passed = {t for t, o in mine.items() if o == "passed"}
        ref = {t for t, o in results["llama-server"].items() if o == "passed"} if "llama-server" in results \
            else reference
        gap = sorted(t for t in ref if t in mine and t not in passed)
        if gap:
            print(f"\npassed by llama-server, not by llamacy ({len(gap)}):")
            print("\n".join(f"  {t}" for t in gap))
        full_baseline = read_list(BASELINE)
        run_files = {f"test_{f}.py" for f in files}
        baseline = {t for t in full_baseline if t.split("::", 1)[0] in run_files and (not a.keyword or t in mine)}
        lost = regressions(baseline, mine)
        new = sorted(passed - baseline)
        if new:
            print(f"\npassing now, not in the baseline ({len(new)}): --update-baseline adds them")
            print("\n".join(f"  {t}" for t in new))
        if lost:
            print(f"\nREGRESSIONS: in the baseline, not passing now ({len(lost)}):")
            print("\n".join(f"  {t}" for t in lost))
            code = 1 if a.check else 0
        if a.update_baseline:
            keep = {t for t in full_baseline if t not in mine}   # tests not run this time
            write_list(BASELINE, passed | keep, "tests of llama.cpp's suite that llamacy passes (CI: no regression)")
    return code


if __name__ == "__main__":
    sys.exit(main())
