"""POST /test/faults: arm a test-only fault (see llamacy/serving/faults.py).

Exists only when the server starts with LLAMACY_TEST_FAULTS=1 (tests set it); production
servers have neither the route nor an injector in the loop.
"""
from __future__ import annotations

import logging
import os

from llamacy.api.fields import get_bool, get_int, get_str
from llamacy.errors import InvalidRequestError
from llamacy.server.base import BaseHandler

log = logging.getLogger(__name__)
ENV = "LLAMACY_TEST_FAULTS"


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def make_injector():
    from llamacy.serving.faults import FaultInjector
    log.warning("%s=1: test-only fault injection is on (POST /test/faults); never use this in production", ENV)
    return FaultInjector()


class FaultsHandler(BaseHandler):
    """``{"point", "kind", "count", "min_tokens"}`` arms a fault; ``{"disarm": true}`` clears all."""

    def post(self) -> None:
        faults = self.state.faults
        body = self.json_body()
        if get_bool(body, "disarm", False):
            faults.disarm()
        else:
            try:
                faults.arm(get_str(body, "point", ""), get_str(body, "kind", ""), count=get_int(body, "count", 1),
                           min_tokens=get_int(body, "min_tokens", 0))
            except ValueError as exc:
                raise InvalidRequestError(str(exc)) from None
        self.write_json({"fired": faults.fired})


ROUTES = [(r"/test/faults", FaultsHandler)]
