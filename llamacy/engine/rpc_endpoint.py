"""``host:port`` of a ggml RPC server, checked the way the engine will read it."""
from __future__ import annotations

import re

_ENDPOINT = re.compile(r"([A-Za-z0-9.\-]+):(\d{1,5})")


def parse_endpoint(text: str) -> tuple[str, int]:
    """'host:port' → (host, port). The engine splits at the first ':', so no IPv6 literals."""
    m = _ENDPOINT.fullmatch(text.strip())
    if m is None or not 0 < int(m[2]) < 65536:
        raise ValueError(f"RPC endpoint must be host:port (IPv4 address or host name), got {text!r}")
    return m[1], int(m[2])
