"""The one base handler: API-key auth, JSON bodies, the spec's error JSON, SSE writing."""
from __future__ import annotations

import hmac
import logging

import orjson
import tornado.web
from tornado.iostream import StreamClosedError

from llamacy.errors import AuthenticationError, InvalidRequestError, LlamacyError, NotFoundError

log = logging.getLogger(__name__)

class BaseHandler(tornado.web.RequestHandler):
    public = False

    def initialize(self, state) -> None:
        self.state = state

    def on_finish(self) -> None:
        if self.state.metrics is not None:
            self.state.metrics.observe(self)

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")

    def options(self, *args) -> None:
        self.set_status(204)
        self.finish()

    def prepare(self) -> None:
        keys = self.state.config.api_keys
        if keys and not self.public and self.request.method != "OPTIONS":
            auth = self.request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            ok = False
            for key in keys:  # constant-time compare against every key
                ok |= hmac.compare_digest(token.encode(), key.encode())
            if not ok:
                raise AuthenticationError("Invalid API Key")

    def json_body(self) -> dict:
        try:
            body = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"invalid JSON in request body: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        return body

    def write_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))

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
        self.set_status(err.status)
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

    async def send_sse(self, obj) -> bool:
        """Write one ``data:`` event; False if the client has gone."""
        payload = obj if isinstance(obj, bytes) else orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            self.write(b"data: " + payload + b"\n\n")
            await self.flush()
            return True
        except StreamClosedError:
            return False
