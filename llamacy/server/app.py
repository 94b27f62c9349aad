"""make_app(state) → the Tornado application; serve(config) runs it until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor

import tornado.httpserver
import tornado.web

from llamacy.config import ServerConfig
from llamacy.errors import LlamacyError
from llamacy.server import completion, faults, native
from llamacy.server.access_log import log_request
from llamacy.server.state import ServerState, load_engine
from llamacy.server.static import StaticHandler, default_webui_dir

log = logging.getLogger("llamacy.server")

SHUTDOWN_GRACE_S = 5.0


def make_app(state: ServerState) -> tornado.web.Application:
    s = {"state": state}
    routes = [
        (r"/health", native.HealthHandler, s),
        (r"/v1/health", native.HealthHandler, s),
        (r"/props", native.PropsHandler, s),
        (r"/completion", completion.CompletionHandler, s),
        (r"/completions", completion.CompletionHandler, s),
        (r"/tokenize", native.TokenizeHandler, s),
        (r"/detokenize", native.DetokenizeHandler, s),
        (r"/slots", native.SlotsHandler, s),
        (r"/slots/(\d+)", native.SlotActionHandler, s),
        (r"/openapi.json", native.OpenAPIHandler, s),
    ]
    for extra in _optional_routes():
        routes.extend((pattern, handler, s) for pattern, handler in extra)
    if state.faults is not None:
        routes.extend((pattern, handler, s) for pattern, handler in faults.ROUTES)
    if state.config.webui or state.config.path:
        static_dir = state.config.path or default_webui_dir()
        routes.append((r"/(.*)", StaticHandler, {"path": static_dir, "default_filename": "index.html",
                                                 "fallback_path": default_webui_dir() if state.config.path else None}))
    return tornado.web.Application(routes, compress_response=False, log_function=log_request)


def _optional_routes():
    """Route tables of the other endpoint groups, when their modules are present."""
    import importlib
    for name in ("llamacy.server.openai", "llamacy.server.anthropic", "llamacy.server.responses",
                 "llamacy.server.embeddings", "llamacy.server.rerank",
                 "llamacy.server.metrics", "llamacy.server.infill", "llamacy.server.cors_proxy"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        yield mod.ROUTES


def _ssl_context(config: ServerConfig):
    if not config.ssl_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.ssl_cert_file, config.ssl_key_file)
    return ctx


async def run_server(config: ServerConfig) -> int:
    state = ServerState(config)
    if faults.enabled():
        state.faults = faults.make_injector()
    if config.metrics:
        from llamacy.server.metrics import Metrics
        state.metrics = Metrics(state)
    app = make_app(state)
    server = tornado.httpserver.HTTPServer(
        app, ssl_options=_ssl_context(config), idle_connection_timeout=config.timeout,
        body_timeout=config.timeout, max_body_size=config.max_body_bytes, xheaders=False)
    scheme = "https" if config.ssl_cert_file else "http"
    for host in config.hosts:
        server.listen(config.port, host)
        log.info("HTTP server listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, config.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine_lost = EngineLost(state, stop, loop)
    from llamacy.engine.backends import set_fatal_handler
    set_fatal_handler(engine_lost.from_engine_thread)

    # a thread of its own, never joined by asyncio.run: a fatal engine error parks it for good
    loader = ThreadPoolExecutor(1, thread_name_prefix="llamacy-load")
    try:
        await engine_lost.guard(loop.run_in_executor(loader, load_engine, state))
    except Exception as exc:  # the server stays up and reports the failure on /health
        log.error("failed to load model: %s", exc)
        state.status = "error"
        server.stop()
        return EngineLost.EXIT_CODE if engine_lost.message else 1
    finally:
        loader.shutdown(wait=False)
    state.status = "ok"
    try:
        from llamacy.server.setup_extras import setup_extras
    except ModuleNotFoundError:
        pass
    else:
        setup_extras(state)
    state.scheduler.start()
    log.info("server is ready: model %s", os.path.basename(state.model_path))

    await stop.wait()
    if engine_lost.message:
        server.stop()
        await engine_lost.drain()
        await server.close_all_connections()
        return EngineLost.EXIT_CODE
    log.info("shutting down: no new connections, in-flight requests get %.0f s", SHUTDOWN_GRACE_S)
    server.stop()
    sch = state.scheduler
    deadline = loop.time() + SHUTDOWN_GRACE_S
    while (sch.n_processing or sch.n_deferred) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await sch.close()
    await server.close_all_connections()
    return 0


class EngineLost:
    """A fatal engine error (e.g. a lost RPC server: ggml aborts on it). The engine thread that
    hit it is parked for good, so every request ends with an error naming the cause, new ones
    are refused, and the process exits with EXIT_CODE for its supervisor (systemd's
    Restart=on-failure) to restart it."""

    EXIT_CODE = 70    # EX_SOFTWARE
    DRAIN_S = 5.0

    def __init__(self, state: ServerState, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.state, self.stop, self.loop = state, stop, loop
        self.message = ""
        self.lost = asyncio.Event()

    async def guard(self, work):
        """Await ``work`` (an engine call on a worker thread) unless the engine is lost first."""
        lost = asyncio.ensure_future(self.lost.wait())
        work = asyncio.ensure_future(work)
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not work.done():
            raise LlamacyError(f"engine failed: {self.message}")
        return work.result()

    def from_engine_thread(self, message: str) -> None:
        """Called by the engine's abort hook on the failing (non-Python) thread."""
        self.loop.call_soon_threadsafe(self.fail, message)

    def fail(self, message: str) -> None:
        if self.message:
            return
        self.message = message
        log.critical("engine failed: %s; failing every request and exiting with code %d", message, self.EXIT_CODE)
        if self.state.scheduler is not None:
            cause = re.sub(r"^\S+:\d+:\s*", "", message)     # without the engine's source path
            self.state.scheduler.break_engine(f"engine failed: {cause}; the server is exiting")
        self.lost.set()
        self.stop.set()

    async def drain(self) -> None:
        """Until the handlers in flight have written their errors (bounded)."""
        deadline = self.loop.time() + self.DRAIN_S
        while self.state.in_flight and self.loop.time() < deadline:
            await asyncio.sleep(0.01)


def serve(config: ServerConfig) -> int:
    code = asyncio.run(run_server(config))
    if code == EngineLost.EXIT_CODE:
        # the engine thread can never be joined: leave without the interpreter's thread joins
        logging.shutdown()
        os._exit(code)
    return code
