"""make_app(state) → the Tornado application; serve(config) runs it until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

import tornado.httpserver
import tornado.web

from llamacy.config import ServerConfig
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
    static_dir = state.config.path or default_webui_dir()
    routes.append((r"/(.*)", StaticHandler, {"path": static_dir, "default_filename": "index.html",
                                             "fallback_path": default_webui_dir() if state.config.path else None}))
    return tornado.web.Application(routes, compress_response=False, log_function=log_request)


def _optional_routes():
    """Route tables of the other endpoint groups, when their modules are present."""
    import importlib
    for name in ("llamacy.server.openai", "llamacy.server.embeddings", "llamacy.server.rerank",
                 "llamacy.server.metrics", "llamacy.server.infill"):
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
    server.listen(config.port, config.host)
    scheme = "https" if config.ssl_cert_file else "http"
    log.info("HTTP server listening on %s://%s:%d", scheme, config.host, config.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    try:
        await loop.run_in_executor(None, load_engine, state)
    except Exception as exc:  # the server stays up and reports the failure on /health
        log.error("failed to load model: %s", exc)
        state.status = "error"
        server.stop()
        return 1
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
    log.info("shutting down: no new connections, in-flight requests get %.0f s", SHUTDOWN_GRACE_S)
    server.stop()
    sch = state.scheduler
    deadline = loop.time() + SHUTDOWN_GRACE_S
    while (sch.n_processing or sch.n_deferred) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await sch.close()
    await server.close_all_connections()
    return 0


def serve(config: ServerConfig) -> int:
    return asyncio.run(run_server(config))
