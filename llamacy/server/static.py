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
    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get_content_type(self) -> str:
        if self.absolute_path and self.absolute_path.endswith((".js", ".mjs")):
            return "text/javascript; charset=utf-8"
        return super().get_content_type()

    def write_error(self, status_code: int, **kwargs) -> None:
        err = NotFoundError("File Not Found") if status_code == 404 else None
        body = err.to_json() if err else {"error": {"code": status_code, "message": self._reason,
                                                    "type": "invalid_request_error"}}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(body))
