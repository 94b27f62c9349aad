"""GPU checks for the CUDA engine build: run by tools/gpu_check.sh on the lent GPU machine.

Starts real llamacy servers (``python -m llamacy``) on loopback against MODEL and prints one
PASS/FAIL/SKIP line per check:

  cuda-loaded      the CUDA backend is a loadable backend of the package and lists the GPUs
  cpu-variant      the CPU backend in use is one of the package's variants (named)
  ngl              -ngl 99 puts the weights on CUDA0 ("offloaded N/N layers"); -ngl 0 puts none there
  sm-none-mg       -sm none -mg 1 puts every weight on the second GPU only          (2 GPUs)
  sm-layer-ts      -sm layer -ts 1,1 splits the weights over both GPUs about evenly (2 GPUs)
  sm-layer-greedy  ... and gives the same greedy output as one GPU                  (2 GPUs)
  ts-uneven        -ts 3,1 moves layers from CUDA1 to CUDA0 compared with -ts 1,1   (2 GPUs)
  sm-row           -sm row -ts 1,1 uses the split (row) buffer type and serves, or — where
                   the engine's backend has no row-split buffers — start-up says so    (2 GPUs)
  vision           an image through --mmproj with -ngl 99 counts the same tokens as with -ngl 0
  no-gpu           with no GPU visible (CUDA_VISIBLE_DEVICES=) the same package serves on the
                   CPU and logs the CUDA backend as skipped / without devices

Usage: python3 tools/gpu_check.py MODEL [--cpu-only]   (PYTHONPATH must reach the built llamacy)
--cpu-only runs what a machine without a GPU can (the CPU half), for testing this script.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PROMPT = "The quick brown fox"
GREEDY = {"prompt": PROMPT, "n_predict": 32, "temperature": 0, "ignore_eos": True, "cache_prompt": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One llamacy server with -v (the engine's load log names each device's buffers)."""

    def __init__(self, model: str, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = tempfile.NamedTemporaryFile(prefix="gpu-check-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llamacy", "-m", model, "--port", str(self.port), "-c", "1024", "-v",
             "--log-format", "text", *args],
            stdout=self.log_file, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(), env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {' '.join(args)} exited with {self.proc.returncode}:\n{self.log()[-8000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server {' '.join(args)} not ready:\n{self.log()[-8000:]}")

    def log(self) -> str:
        self.log_file.flush()
        with open(self.log_file.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def complete(self) -> str:
        body = self.post(GREEDY)
        assert body["tokens_predicted"] == GREEDY["n_predict"], body
        return body["content"]

    def post(self, request: dict, path: str = "/completion") -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(request).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=60) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return float("nan")

    def buffers(self) -> dict[str, float]:
        """MiB of model weights per buffer type, from the engine's load log."""
        out: dict[str, float] = {}
        for name, mib in re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", self.log()):
            out[name] = out.get(name, 0.0) + float(mib)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if os.path.exists(self.log_file.name):
            os.unlink(self.log_file.name)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append((name, verdict, detail))
        print(f"  {name:<16} {verdict:<5} {detail}", flush=True)

    def check(self, name: str, fn) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:       # a crashed check is a failed check, with the reason
            ok, detail = False, f"{type(exc).__name__}: {str(exc)[-600:]}"
        self.add(name, ok, detail)

    def summary(self) -> int:
        print("\n== gpu_check summary ==")
        print(f"{'check':<16} {'result':<6} detail")
        for name, verdict, detail in self.rows:
            print(f"{name:<16} {verdict:<6} {detail.splitlines()[0] if detail else ''}")
        failed = [r for r in self.rows if r[1] == "FAIL"]
        print(f"{len(self.rows) - len(failed)} passed or skipped, {len(failed)} failed")
        return 1 if failed else 0


def smoke(model: str, args: list[str]) -> int:
    """Start one server, ask one completion, print the server's whole log; 0 if it served."""
    srv = None
    try:
        srv = Server(model, *args)
        print("completion:", repr(srv.complete()))
        print("engine:", json.dumps(srv.get("/props").get("engine")))
        return 0
    except Exception as exc:   # noqa: BLE001 - reported, with the log, as the result
        print(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if srv is not None:
            print(srv.log())
            srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--cpu-only", action="store_true", help="only the checks a machine without a GPU can run")
    ap.add_argument("--smoke", nargs=argparse.REMAINDER, default=None,
                    help="instead: serve once with these flags, one completion, the whole log printed")
    ap.add_argument("--only", default=None, help="comma-separated names of the checks to run")
    a = ap.parse_args()
    if a.smoke is not None:
        return smoke(a.model, a.smoke)
    t = Table()
    if a.only:
        only, check = set(a.only.split(",")), t.check
        t.check = lambda name, fn: check(name, fn) if name in only else None
    gpus: list[dict] = []

    def cuda_loaded():
        srv = Server(a.model)
        try:
            eng = srv.get("/props")["engine"]
        finally:
            srv.stop()
        gpus[:] = [d for d in eng["devices"] if d["backend"] == "CUDA"]
        names = ", ".join(f"{d['name']} {d['description']} {d['memory_mib']} MiB" for d in gpus)
        return "CUDA" in eng["backends"] and bool(gpus), f"backends {eng['backends']}; GPUs: {names or 'none'}"

    def cpu_variant():
        srv = Server(a.model, env={"CUDA_VISIBLE_DEVICES": ""})
        try:
            eng = srv.get("/props")["engine"]
        finally:
            srv.stop()
        return bool(re.fullmatch(r"[a-z0-9_]+", eng["cpu_variant"])) and eng["cpu_variant"] != "unknown", \
            f"{eng['cpu_variant']} ({' '.join(eng['cpu_features'])})"

    def no_gpu():
        srv = Server(a.model, "-ngl", "99", env={"CUDA_VISIBLE_DEVICES": ""})
        try:
            text = srv.complete()
            eng = srv.get("/props")["engine"]
            log = srv.log()
        finally:
            srv.stop()
        cuda_devs = [d for d in eng["devices"] if d["backend"] == "CUDA"]
        skipped = [s for s in eng["skipped"] if s["backend"] == "cuda"]
        said = re.search(r"engine: cuda backend skipped: .*|-ngl 99: no GPU device.*", log)
        return not cuda_devs and bool(text) and bool(said), \
            f"served {len(text)} chars on the CPU; {said[0] if said else 'no skip/-ngl line in the log'}" + \
            (f"; skipped: {skipped[0]['reason']}" if skipped else "")

    def ngl():
        on, off = Server(a.model, "-ngl", "99"), None
        try:
            on_buf, on_log = on.buffers(), on.log()
            on.stop()
            off = Server(a.model, "-ngl", "0")
            off_buf = off.buffers()
        finally:
            on.stop()
            if off:
                off.stop()
        layers = re.search(r"offloaded (\d+)/(\d+) layers to GPU", on_log)
        ok = bool(layers) and layers[1] == layers[2] and on_buf.get("CUDA0", 0) > 0 and off_buf.get("CUDA0", 0) == 0
        return ok, f"-ngl 99: {layers[0] if layers else '?'}, buffers {on_buf}; -ngl 0: buffers {off_buf}"

    def two_gpu(fn):
        def run():
            if len(gpus) < 2:
                return None, f"needs 2 GPUs, {len(gpus)} visible"
            return fn()
        return run

    results: dict = {}

    def sm_none_mg():
        srv = Server(a.model, "-ngl", "99", "-sm", "none", "-mg", "1")
        try:
            buf = srv.buffers()
            results["mg1"] = srv.complete()
        finally:
            srv.stop()
        return buf.get("CUDA1", 0) > 0 and buf.get("CUDA0", 0) == 0, f"buffers {buf}"

    def sm_layer_ts():
        one = Server(a.model, "-ngl", "99", "-sm", "none", "-mg", "0")
        try:
            results["one"] = one.complete()
        finally:
            one.stop()
        two = Server(a.model, "-ngl", "99", "-sm", "layer", "-ts", "1,1")
        try:
            buf = two.buffers()
            results["two"] = two.complete()
        finally:
            two.stop()
        results["buf11"] = buf
        c0, c1 = buf.get("CUDA0", 0), buf.get("CUDA1", 0)
        # the last device also holds the output layer, so even layers give c0 a bit below c1
        return c0 > 0 and c1 > 0 and 0.4 < c0 / c1 < 2, f"buffers {buf}"

    def sm_layer_greedy():
        if "one" not in results or "two" not in results:
            return False, "sm-layer-ts did not produce both outputs"
        same = results["one"] == results["two"]
        return same, f"1 GPU vs -sm layer -ts 1,1: {'identical' if same else 'DIFFERENT'} " \
                     f"({len(results['one'])} chars){'' if same else ': ' + repr(results['one'][:80]) + ' vs ' + repr(results['two'][:80])}"

    def ts_uneven():
        srv = Server(a.model, "-ngl", "99", "-sm", "layer", "-ts", "3,1")
        try:
            buf = srv.buffers()
        finally:
            srv.stop()
        even = results.get("buf11", {})
        c0, c1, e0, e1 = buf.get("CUDA0", 0), buf.get("CUDA1", 0), even.get("CUDA0", 0), even.get("CUDA1", 0)
        # 3:1 moves about a quarter of the layers from CUDA1 to CUDA0 compared with 1:1
        return e0 > 0 and c0 > 1.3 * e0 and 0 < c1 < e1, f"-ts 3,1: {buf}; -ts 1,1: {even}"

    def sm_row():
        try:
            srv = Server(a.model, "-ngl", "99", "-sm", "row", "-ts", "1,1")
        except RuntimeError as exc:   # the engine's CUDA backend may have no row-split buffers
            said = re.search(r"-sm row: .*cannot split rows.*", str(exc))
            return bool(said), f"refused at start-up: {said[0]}" if said else str(exc)[-300:]
        try:
            buf = srv.buffers()
            text = srv.complete()
        finally:
            srv.stop()
        split = {k: v for k, v in buf.items() if "Split" in k}
        same = text == results.get("one")
        return bool(split) and bool(text), f"buffers {buf}; greedy output {'same as' if same else 'differs from'} 1 GPU"

    print("== gpu_check ==", flush=True)
    def backend_sampling():
        """Candidates from the device's top-k, and greedy tokens chosen on the device after the
        request's bias and penalties, give what the whole row gives: greedy (the default
        penalties; strong ones and a bias), seeded sampling (the bench's mix), and an n_probs
        request (whole row)."""
        mix = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}
        strong = {"repeat_penalty": 1.3, "frequency_penalty": 0.4, "presence_penalty": 0.3, "repeat_last_n": 16,
                  "logit_bias": [[28, 2.5], [13, False]]}
        bodies = [{"prompt": PROMPT, "n_predict": 48, "temperature": 0},
                  {"prompt": PROMPT, "n_predict": 48, "seed": 7, **mix},
                  {"prompt": "Once upon a time", "n_predict": 48, "seed": 8, "ignore_eos": True, **mix},
                  {"prompt": "One two three", "n_predict": 48, "temperature": 0, **strong},
                  {"prompt": PROMPT, "n_predict": 8, "temperature": 0, "n_probs": 2}]
        out, device, greedy = {}, 0.0, 0.0
        for mode in ("--backend-sampling", "--no-backend-sampling"):
            srv = Server(a.model, "-ngl", "99", "-np", "4", "--metrics", mode)
            try:
                out[mode] = [(b["content"], b["tokens_predicted"]) for b in map(srv.post, bodies)]
                if mode == "--backend-sampling":
                    device = srv.metric("llamacy:engine_device_outputs_total")
                    greedy = srv.metric("llamacy:engine_device_greedy_outputs_total")
            finally:
                srv.stop()
        same = out["--backend-sampling"] == out["--no-backend-sampling"]
        got = out["--backend-sampling"]
        n_dev, n_greedy = sum(n for _, n in got[:4]), got[0][1] + got[3][1]
        return same and device == n_dev and greedy == n_greedy, \
            f"{'identical' if same else 'DIFFERENT'} results, {device:.0f} of {n_dev + got[4][1]} outputs on the " \
            f"device (want {n_dev}), {greedy:.0f} by the device greedy (want {n_greedy})"

    def vision():
        """An image through the projector with the model on the GPU, against the same on the CPU."""
        import base64
        import shutil
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sys.path.insert(0, os.path.join(root, "tests"))
        from images import N_IMAGE, png
        d = tempfile.mkdtemp(prefix="gpu-check-vision-")
        lm, proj = os.path.join(d, "tiny.gguf"), os.path.join(d, "mmproj.gguf")
        try:
            subprocess.run([sys.executable, os.path.join(root, "tools", "make_test_gguf.py"), lm, "--source", a.model,
                            "--vision", proj], check=True, capture_output=True)
            body = {"prompt": "USER:[img-1]Describe the image.\nASSISTANT:", "n_predict": 4, "temperature": 0,
                    "image_data": [{"data": base64.b64encode(png(64, 48, (200, 30, 30), stripe=(0, 0, 255))).decode(),
                                    "id": 1}]}
            out = {}
            for ngl in ("0", "99"):
                srv = Server(lm, "--mmproj", proj, "-ngl", ngl)
                try:
                    req = urllib.request.Request(srv.url + "/completion", data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=300) as r:
                        out[ngl] = (json.loads(r.read())["tokens_evaluated"],
                                    re.findall(r"CLIP using (\S+) backend", srv.log()), srv.buffers())
                finally:
                    srv.stop()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        (n_cpu, clip_cpu, _), (n_gpu, clip_gpu, buf_gpu) = out["0"], out["99"]
        ok = n_cpu == n_gpu and n_gpu > N_IMAGE and buf_gpu.get("CUDA0", 0) > 0
        return ok, f"tokens_evaluated CPU {n_cpu}, GPU {n_gpu} ({N_IMAGE} for the image); projector on " \
                   f"{clip_cpu or '?'} / {clip_gpu or '?'}; model buffers {buf_gpu}"

    if not a.cpu_only:
        t.check("cuda-loaded", cuda_loaded)
    t.check("cpu-variant", cpu_variant)
    t.check("no-gpu", no_gpu)
    if not a.cpu_only:
        t.check("ngl", ngl)
        t.check("sm-none-mg", two_gpu(sm_none_mg))
        t.check("sm-layer-ts", two_gpu(sm_layer_ts))
        t.check("sm-layer-greedy", two_gpu(sm_layer_greedy))
        t.check("ts-uneven", two_gpu(ts_uneven))
        t.check("sm-row", two_gpu(sm_row))
        t.check("vision", vision)
        t.check("backend-sampling", backend_sampling)
    return t.summary()


if __name__ == "__main__":
    sys.exit(main())
