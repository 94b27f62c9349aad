"""CORS: which origin a response names in ``Access-Control-Allow-Origin`` (``--cors-origins``).

``*`` (the default, the 2024 behaviour): any origin may call; with credentials allowed the
caller's ``Origin`` is reflected (browsers refuse ``*`` with credentials), without them ``*``.
``localhost``: only pages served from localhost, 127.0.0.1 or [::1] (any scheme and port) — what
today's llama-server defaults to when its agent tools are on. Anything else is a comma-separated
list of exact origins (``https://app.example.com``); only a listed origin is reflected. An origin
that is not allowed gets no ``Access-Control-Allow-Origin`` at all, so the browser blocks the page.
"""
from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def origin_is_localhost(origin: str) -> bool:
    """True when ``origin``'s host is localhost, 127.0.0.1 or ::1 (``http://localhost.evil.com`` is not)."""
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    return bool(parts.scheme) and host in LOCAL_HOSTS


def allowed_origin(policy: str, origin: str | None, *, credentials: bool) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None (no header)."""
    if policy == "*":
        if credentials:
            return origin or "*"
        return "*"
    if not origin:
        return None
    if policy == "localhost":
        return origin if origin_is_localhost(origin) else None
    listed = {o.strip().rstrip("/") for o in policy.split(",") if o.strip()}
    return origin if origin.rstrip("/") in listed else None
