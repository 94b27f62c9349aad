"""Typed reads of JSON request fields: each error names the field and what was expected."""
from __future__ import annotations

import math
from typing import Any

from llamacy.errors import InvalidRequestError

_MISSING = object()


def _bad(name: str, expected: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(f"'{name}' must be {expected}, got {type(value).__name__}: {str(value)[:60]!r}")


def get_int(body: dict, name: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise _bad(name, "an integer", v)
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InvalidRequestError(f"'{name}' must be in [{lo if lo is not None else '-inf'}, "
                                  f"{hi if hi is not None else 'inf'}], got {v}")
    return v


def get_float(body: dict, name: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(name, "a finite number", v)
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InvalidRequestError(f"'{name}' must be in [{lo if lo is not None else '-inf'}, "
                                  f"{hi if hi is not None else 'inf'}], got {v}")
    return v


def get_bool(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(name, "a boolean", v)
    return v


def get_str(body: dict, name: str, default: str) -> str:
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        return default
    if not isinstance(v, str):
        raise _bad(name, "a string", v)
    return v


def get_str_list(body: dict, name: str, *, max_items: int = 64) -> list[str]:
    """A list of strings; a lone string is accepted as a one-item list (OpenAI's ``stop``)."""
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(name, "an array of strings", v)
    if len(v) > max_items:
        raise InvalidRequestError(f"'{name}' has more than {max_items} items")
    return v


def require_object(body: Any, what: str = "request body") -> dict:
    if not isinstance(body, dict):
        raise InvalidRequestError(f"{what} must be a JSON object")
    return body
