"""Models from the network: ``-mu URL`` or ``-hfr REPO -hff FILE``, downloaded once into a cache.

The download goes to ``<file>.part`` and resumes from it with an HTTP ``Range`` request
(after a dropped connection, or in a later run); the finished file must start with the
GGUF magic and is then renamed into place atomically, so a file in the cache is always
complete and is reused without touching the network. urllib only: no extra dependency.

Environment: ``LLAMACY_CACHE`` (cache folder, default ``~/.cache/llamacy``),
``LLAMACY_HF_ENDPOINT`` (default ``https://huggingface.co``), ``HF_TOKEN`` (sent with
``-hfr`` downloads only, and never to the host a download redirects to).
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import posixpath
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from llamacy.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
CHUNK = 1 << 20
ATTEMPTS = 3              # connections per download; each one resumes where the last stopped
TIMEOUT_S = 60.0          # per socket operation
PROGRESS_EVERY_S = 1.0


def cache_dir() -> str:
    return os.environ.get("LLAMACY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llamacy")


def hf_endpoint() -> str:
    return (os.environ.get("LLAMACY_HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_url(repo: str, file: str) -> str:
    return f"{hf_endpoint()}/{urllib.parse.quote(repo)}/resolve/main/{urllib.parse.quote(file)}"


def cache_path(url: str) -> str:
    """Where ``url`` is kept: the URL's file name behind a short hash of the whole URL."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path)) or "model.gguf"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:150] or "model.gguf"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), f"{digest}-{name}")


def resolve_model(config) -> str | None:
    """The local path of the model named by ``-mu`` or ``-hfr``/``-hff``, downloading it if needed.

    ``None`` when neither is given. With ``-m`` as well, the model is downloaded to that path
    (as llama.cpp does); otherwise into the cache.
    """
    url, token = config.model_url, None
    if not url and (config.hf_repo or config.hf_file):
        if not (config.hf_repo and config.hf_file):
            raise ModelLoadError("--hf-repo and --hf-file go together")
        url, token = hf_url(config.hf_repo, config.hf_file), os.environ.get("HF_TOKEN") or None
    if not url:
        return None
    dest = config.model or cache_path(url)
    if os.path.isfile(dest):
        _check_gguf(dest, url)
        return dest
    download(url, dest, token=token)
    return dest


def download(url: str, dest: str, *, token: str | None = None) -> None:
    """Fetch ``url`` into ``dest`` through ``dest + '.part'``, resuming what a previous try left.

    ``token`` goes to ``url``'s host as a Bearer token, never to a host it redirects to.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ModelLoadError(f"cannot download {url}: only http and https URLs are supported")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    # One downloader per file, across processes (the lock file stays: unlinking it would race).
    with open(dest + ".lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(dest):          # another process finished it while this one waited
            return
        progress = _Progress(os.path.basename(dest))
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if _fetch(url, part, progress, token):
                    break
            except (OSError, http.client.HTTPException) as exc:   # a dropped or timed-out connection
                if attempt == ATTEMPTS:
                    raise ModelLoadError(f"failed to download {url}: {exc} (partial file kept for resuming: {part})")
                print(f"download of {url} interrupted ({exc}); resuming", file=sys.stderr, flush=True)
        progress.done()
        _check_gguf(part, url, remove=True)
        os.replace(part, dest)


def _fetch(url: str, part: str, progress: _Progress, token: str | None) -> bool:
    """One connection: append to ``part`` from its current size. True when the file is complete."""
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"User-Agent": "llamacy"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    if token:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            m = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "").strip())
            if m and int(m.group(1)) == offset:
                return True        # the partial file is already whole (stopped before its rename)
            os.unlink(part)        # not a prefix the server can continue: start over
            return _fetch(url, part, progress, token)
        hint = " (set HF_TOKEN for a gated or private repository)" if exc.code in (401, 403) else ""
        raise ModelLoadError(f"failed to download {url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise ModelLoadError(f"failed to download {url}: {exc.reason}") from None
    with resp:
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise ModelLoadError(f"failed to download {url}: server resumed at byte {start}, wanted {offset}")
            mode = "ab"
        else:                      # 200: the server ignored Range; take the whole file again
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        progress.start(offset, total)
        with open(part, mode) as f:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                progress.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    size = os.path.getsize(part)
    if total is not None and size < total:
        raise http.client.IncompleteRead(b"", total - size)
    return True


def _content_range_start(value: str) -> int:
    m = re.match(r"bytes (\d+)-", value.strip())
    return int(m.group(1)) if m else -1


def _check_gguf(path: str, url: str, remove: bool = False) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        if remove:
            os.unlink(path)
        raise ModelLoadError(f"the file downloaded from {url} is not a GGUF model (starts with {magic!r}): {path}")


class _Progress:
    """A plain-text progress line on stderr, at most once per PROGRESS_EVERY_S."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done_bytes = 0
        self.total: int | None = None
        self.t0 = time.monotonic()
        self.t_last = 0.0
        self.start_bytes = 0

    def start(self, offset: int, total: int | None) -> None:
        self.done_bytes = self.start_bytes = offset
        self.total = total
        if offset:
            print(f"downloading {self.name}: resuming at {offset / 2**20:.1f} MiB", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if now - self.t_last >= PROGRESS_EVERY_S:
            self.t_last = now
            self._print(now)

    def done(self) -> None:
        self._print(time.monotonic())

    def _print(self, now: float) -> None:
        mib = self.done_bytes / 2**20
        speed = (self.done_bytes - self.start_bytes) / 2**20 / max(now - self.t0, 1e-6)
        if self.total:
            pct = 100.0 * self.done_bytes / self.total
            line = f"downloading {self.name}: {pct:5.1f}% ({mib:.1f}/{self.total / 2**20:.1f} MiB, {speed:.1f} MiB/s)"
        else:
            line = f"downloading {self.name}: {mib:.1f} MiB ({speed:.1f} MiB/s)"
        print(line, file=sys.stderr, flush=True)
