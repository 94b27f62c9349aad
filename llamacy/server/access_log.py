"""The access log: one line per finished request (Tornado's ``log_function`` application setting).

The line carries method, path, status, elapsed time and the client address as record
attributes, which the JSON formatter (llamacy/logs.py) writes as fields. Only the path is
logged: never the query string, headers (Authorization) or bodies. Successful liveness
probes are logged at DEBUG so they do not flood the log.
"""
from __future__ import annotations

import logging

log = logging.getLogger("llamacy.access")

QUIET_PATHS = frozenset(("/health", "/v1/health"))


def log_request(handler) -> None:
    req = handler.request
    status = handler.get_status()
    elapsed_ms = round(req.request_time() * 1e3, 2)
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    elif req.path in QUIET_PATHS:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    path = req.path[:200]
    log.log(level, "%s %s %d %.2fms %s", req.method, path, status, elapsed_ms, req.remote_ip,
            extra={"method": req.method, "path": path, "status": status, "elapsed_ms": elapsed_ms,
                   "remote": req.remote_ip})
