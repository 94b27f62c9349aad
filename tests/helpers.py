"""Test helpers: a real llamacy server process on a free loopback port, SSE parsing."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

# A question the default model answers with wide logit margins on every token up to "Paris"
# (the question alone starts with a near tie that CPUs' different kernels decide differently).
ANSWERED_QUESTION = "What is the capital of France? Answer in one sentence."
# For two requests whose outputs are compared: each evaluates its whole prompt. A cached prefix
# leaves the last prompt token to be evaluated alone, and logits need not be bit-identical across
# batch sizes (llama.cpp's cache_prompt caveat).
WHOLE_PROMPT = {"cache_prompt": False}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ready(url: str, proc: subprocess.Popen, log_path: str, timeout: float = 60.0) -> None:
    """Until ``url``/health answers 200; fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, "rb") as f:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{f.read().decode('utf-8', 'replace')}")
        try:
            if requests.get(url + "/health", timeout=1, verify=False).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s")


def wait_port_open(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port (e.g. an RPC server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


class ServerProcess:
    """``python -m llamacy`` with the given flags, on 127.0.0.1 and a free port."""

    def __init__(self, *args: str, env: dict | None = None, scheme: str = "http", wait: bool = True) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "llamacy", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-format", "text", *args]
        self.log_path = os.path.join(tempfile.gettempdir(), f"llamacy-test-{self.port}.log")
        self._log = open(self.log_path, "w+b")
        # Run outside the repository (so ``-m llamacy`` can't pick up the uncompiled source tree)
        # with the same llamacy the tests imported.
        import llamacy
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(llamacy.__file__)))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
                                     env={**os.environ, "PYTHONPATH": pkg_root, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            wait_http_ready(self.url, self.proc, self.log_path, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log()}") from None

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self.proc.returncode in (0, -signal.SIGTERM):
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        return self.proc.returncode

    def post(self, path: str, json=None, **kw):
        kw.setdefault("timeout", 120)
        return requests.post(self.url + path, json=json, **kw)

    def get(self, path: str, **kw):
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, **kw)

    def request(self, method: str, path: str, **kw):
        kw.setdefault("timeout", 30)
        return requests.request(method, self.url + path, **kw)


def sse_events(response) -> list[dict]:
    """Parse a server-sent events response into its JSON payloads."""
    import json
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:]
            if data == b"[DONE]":
                break
            out.append(json.loads(data))
    return out


def run_in_threads(target, args_list) -> None:
    """Run ``target(*args)`` for each args on its own thread, all at once; re-raise the first
    exception any of them raised (an assertion inside a thread must reach the test)."""
    import threading
    errors: list[BaseException] = []

    def guarded(*args):
        try:
            target(*args)
        except BaseException as exc:   # collected, re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def wait_for(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``condition()`` until it returns a truthy value (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def metrics(server) -> dict:
    """The server's /metrics as {name: value} for unlabelled samples and {(name, label value): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    out: dict = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            key = s.name if not s.labels else (s.name, *s.labels.values())
            out[key] = s.value
    return out


def quiescent(server) -> dict | None:
    """The /metrics values once nothing is in flight, queued or processing; else None."""
    m = metrics(server)
    if (m["llamacy:http_requests_in_flight"] == 0 and m["llamacpp:requests_processing"] == 0
            and m["llamacpp:requests_deferred"] == 0):
        return m
    return None


def send_raw(server, path: str, body: dict, *, rcvbuf: int | None = None) -> socket.socket:
    """Send a POST on a raw socket and return the socket unread: a client that may vanish."""
    import json
    data = json.dumps(body).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def vanish(sock: socket.socket) -> None:
    """Drop a connection abruptly (RST), as a crashed or killed client does."""
    import struct
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
