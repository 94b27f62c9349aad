"""GET/POST /cors-proxy?url=...: a request a browser page cannot make itself (another origin),
made by the server and answered back — today's llama-server's ``--ui-mcp-proxy``, which its web
UI uses to reach MCP servers. Off by default (403).

Only what the caller marks explicitly reaches the target: a header ``x-llama-server-proxy-header-NAME``
is sent as ``NAME``; the caller's own ``Authorization``, ``X-Api-Key``, cookies and every other
header stay here. Only http and https URLs without credentials in them; no redirects followed;
the answer is bounded by ``--max-body-size`` and the time by ``--timeout``; the target's status
and ``Content-Type`` come back, no other header (no cookies).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from llamacy.errors import BadGatewayError, FeatureDisabledError, InvalidRequestError
from llamacy.server.base import BaseHandler

PROXY_HEADER_PREFIX = "x-llama-server-proxy-header-"


def target_url(url: str | None) -> str:
    """The URL to fetch, checked: a clear 400 for anything but http(s) with a host and no credentials."""
    if not url:
        raise InvalidRequestError("'url' (the query parameter naming the target) is required")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port    # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidRequestError(f"invalid target URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequestError(f"unsupported URL scheme in target URL: {parts.scheme or '(none)'}")
    if not host:
        raise InvalidRequestError("invalid target URL: missing host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("authentication in target URL is not supported")
    return url


def forwarded_headers(headers) -> dict[str, str]:
    """The headers the caller asked to send: ``x-llama-server-proxy-header-NAME: v`` → ``NAME: v``."""
    out = {}
    for name, value in headers.get_all():
        if name.lower().startswith(PROXY_HEADER_PREFIX) and len(name) > len(PROXY_HEADER_PREFIX):
            out[name[len(PROXY_HEADER_PREFIX):]] = value
    return out


class CorsProxyHandler(BaseHandler):
    async def get(self) -> None:
        await self._proxy("GET")

    async def post(self) -> None:
        await self._proxy("POST")

    async def _proxy(self, method: str) -> None:
        c = self.state.config
        if not c.ui_mcp_proxy:
            raise FeatureDisabledError("this feature is disabled")
        url = target_url(self.get_query_argument("url", None))
        request = HTTPRequest(url, method=method, headers=forwarded_headers(self.request.headers),
                              body=bytes(self._body) if method == "POST" else None, follow_redirects=False,
                              connect_timeout=min(c.timeout, 30), request_timeout=c.timeout,
                              decompress_response=True)
        # its own client: a bounded answer, not shared with anything else on this IOLoop
        client = AsyncHTTPClient(force_instance=True, max_body_size=c.max_body_bytes)
        try:
            response = await client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            raise BadGatewayError(f"the proxied request to {url} failed: {exc}") from None
        finally:
            client.close()
        if response.code == 599:       # no HTTP answer: connection refused, timeout, too large
            raise BadGatewayError(f"the proxied request to {url} failed: {response.error}")
        self.set_status(response.code, response.reason)
        content_type = response.headers.get("Content-Type")
        if content_type:
            self.set_header("Content-Type", content_type)
        self.finish(response.body or b"")


ROUTES = [(r"/cors-proxy", CorsProxyHandler)]
