"""The one base handler: API-key auth, bounded JSON bodies, the spec's error JSON, SSE writing.

Bodies are streamed in (``stream_request_body``) so a body declared larger than
``--max-body-size`` is refused with a 413 before it is read, and an unauthenticated client
is refused before it sends one. Every handler counts in ``llamacy:http_requests_in_flight``
from ``prepare`` to ``on_finish``: a handler that never finishes shows there.
"""
from __future__ import annotations

import asyncio
import hmac
import logging

import orjson
import tornado.web
from tornado.iostream import StreamClosedError

from llamacy.errors import AuthenticationError, InvalidRequestError, LlamacyError, NotFoundError, PayloadTooLargeError
from llamacy.server.cors import allowed_origin

log = logging.getLogger(__name__)

OFFLOAD_BODY_BYTES = 256 << 10   # bodies above this are parsed (JSON, tokenization) off the IOLoop


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    public = False              # open without an API key
    counts_in_flight = True     # counted in llamacy:http_requests_in_flight (not /metrics itself)

    def initialize(self, state) -> None:
        self.state = state
        self._body = bytearray()
        self._counted = False
        self.set_default_headers()     # Tornado's first call came before the state was known

    def prepare(self) -> None:
        if self.counts_in_flight:
            self.state.in_flight += 1
            self._counted = True
        keys = self.state.config.api_keys
        if keys and not self.public and self.request.method != "OPTIONS":
            auth = self.request.headers.get("Authorization", "")
            # Anthropic's clients send the key as X-Api-Key
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else self.request.headers.get("X-Api-Key", "")
            ok = False
            for key in keys:  # constant-time compare against every key
                ok |= hmac.compare_digest(token.encode(), key.encode())
            if not ok:
                raise AuthenticationError("Invalid API Key")
        limit = self.state.config.max_body_bytes
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"request body of {int(declared)} bytes is larger than the limit of "
                                       f"{limit} bytes (--max-body-size)")
        self.request.connection.set_max_body_size(limit)   # a chunked body over it is cut off

    def data_received(self, chunk: bytes) -> None:
        self._body += chunk

    def on_finish(self) -> None:
        if self._counted:
            self._counted = False
            self.state.in_flight -= 1
        if self.state.metrics is not None:
            self.state.metrics.observe(self)

    def set_default_headers(self) -> None:
        # as llama-server: by default the caller's origin reflected (any origin may call), any
        # header; --cors-origins/-methods/-headers/--no-cors-credentials narrow it (server/cors.py)
        state = getattr(self, "state", None)
        if state is None:
            return
        c = state.config
        origin = allowed_origin(c.cors_origins, self.request.headers.get("Origin"), credentials=c.cors_credentials)
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Access-Control-Allow-Credentials", "true" if c.cors_credentials else "false")
        self.set_header("Access-Control-Allow-Headers", c.cors_headers)
        self.set_header("Access-Control-Allow-Methods", c.cors_methods)

    def options(self, *args) -> None:
        """A CORS preflight: 200 with the headers above, no key needed."""
        self.set_status(200)
        self.finish()

    @property
    def body_size(self) -> int:
        return len(self._body)

    def json_body(self) -> dict:
        try:
            body = orjson.loads(self._body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"invalid JSON in request body: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        if self.state.config.verbose:   # -v: the full request (headers, and so API keys, never)
            log.debug("request %s %s: %s", self.request.method, self.request.path,
                      self._body.decode("utf-8", "replace"))
        return body

    async def off_loop(self, fn, *args):
        """Run a parse step (JSON, tokenization, templates) on the parse threads when the body
        is large, so a big request does not stall every stream on the IOLoop; inline otherwise."""
        if self.body_size <= OFFLOAD_BODY_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.state.parse_pool, fn, *args)

    def write_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        payload = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        if self.state.config.verbose:
            log.debug("response %s %s: %s", self.request.method, self.request.path, payload.decode())
        self.finish(payload)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LlamacyError):
            err = exc
        elif isinstance(exc, tornado.web.HTTPError) and exc.status_code == 404:
            err = NotFoundError("File Not Found")
        elif isinstance(exc, tornado.web.HTTPError) and exc.status_code < 500:
            err = LlamacyError(exc.log_message or self._reason, status=exc.status_code)
            err.type = "invalid_request_error"
        else:
            err = LlamacyError("Internal server error")
        if self.state.metrics is not None:
            self.state.metrics.rejected(err.reason or err.type)
        self.set_status(err.status)
        for name, value in err.headers:
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(err.to_json()))

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LlamacyError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, LlamacyError) and value.status != 500:
            return
        super().log_exception(typ, value, tb)

    # --- server-sent events ---------------------------------------------------------
    def start_sse(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    async def send_sse(self, obj, event: str | None = None) -> bool:
        """Write one ``data:`` event (named ``event``, if given); False if the client has gone — or
        has not taken what was sent within the timeout (``-to``): then the connection is closed."""
        payload = obj if isinstance(obj, bytes) else orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        if self.state.config.verbose:
            log.debug("response event %s: %s", self.request.path, payload.decode())
        try:
            if event is not None:
                self.write(b"event: " + event.encode() + b"\n")
            self.write(b"data: " + payload + b"\n\n")
            sent = self.flush()
            if sent.done():     # the socket took it at once (the common case): no timer, no loop turn
                sent.result()
            else:
                await asyncio.wait_for(sent, self.state.config.timeout)
            return True
        except StreamClosedError:
            return False
        except asyncio.TimeoutError:
            log.warning("client %s did not read for %d s: closing the stream", self.request.remote_ip,
                        self.state.config.timeout)
            self.request.connection.close()
            return False
