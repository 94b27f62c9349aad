"""The static web front end (webui/, or --path), open without an API key."""
from __future__ import annotations

import os

import orjson
import tornado.web

from llamacy.errors import NotFoundError


def default_webui_dir() -> str:
    """The web UI shipped inside the package, or the repository's webui/ in a source tree."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    packaged = os.path.join(here, "webui")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(here), "webui")


class StaticHandler(tornado.web.StaticFileHandler):
    """Static files; ``completion.js`` falls back to the built-in copy when --path lacks it
    (the spec tells --path pages to import /completion.js)."""

    FALLBACK_FILES = ("completion.js",)

    def initialize(self, path: str, default_filename: str | None = None, fallback_path: str | None = None) -> None:
        super().initialize(path, default_filename)
        self.fallback_path = fallback_path

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path:
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)

    def validate_absolute_path(self, root: str, absolute_path: str):
        if self.fallback_path and self.path in self.FALLBACK_FILES and not os.path.exists(absolute_path):
            root = self.root = os.path.abspath(self.fallback_path)
            absolute_path = os.path.join(root, self.path)
        return super().validate_absolute_path(root, absolute_path)

    def _no_such_route(self, *args) -> None:
        raise tornado.web.HTTPError(404)

    post = put = patch = delete = _no_such_route
    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get_content_type(self) -> str:
        if self.absolute_path and self.absolute_path.endswith((".js", ".mjs")):
            return "text/javascript; charset=utf-8"
        return super().get_content_type()

    def write_error(self, status_code: int, **kwargs) -> None:
        err = NotFoundError("File Not Found") if status_code == 404 else None
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        body = err.to_json() if err else {"error": {"code": status_code, "message": self._reason, "type": kind}}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(body))
