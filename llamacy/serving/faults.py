"""Test-only fault injection: make a step of the loop fail on purpose, to prove it survives.

Off in production: the scheduler holds no injector unless the server was started with the
environment variable ``LLAMACY_TEST_FAULTS=1`` (which also exposes ``POST /test/faults`` to arm
one, and logs a warning). Each check is one ``is not None`` test when off.

Points and kinds:
- ``decode`` (engine thread, before ``llama_decode``): ``error`` raises RuntimeError, ``memory``
  raises MemoryError, ``no_kv`` answers as llama_decode's return code 1 does (no KV slot) for
  batches of more than ``min_tokens`` tokens, leaving the KV cache untouched;
- ``publish`` (IOLoop, while results are handed out): ``error``;
- ``embed`` (engine thread, before an embedding batch): ``error``.
``count`` is how many checks fail (-1: every one, until disarmed).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from llamacy.errors import NoKvSlotError

POINTS = {"decode": ("error", "memory", "no_kv"), "publish": ("error",), "embed": ("error",)}


class InjectedFault(RuntimeError):
    """The exception an armed ``error`` fault raises."""


@dataclass
class _Fault:
    kind: str
    count: int
    min_tokens: int


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, _Fault] = {}
        self.fired = 0

    def arm(self, point: str, kind: str, count: int = 1, min_tokens: int = 0) -> None:
        if kind not in POINTS.get(point, ()):
            raise ValueError(f"unknown fault {point}/{kind}; known: {POINTS}")
        with self._lock:
            self._armed[point] = _Fault(kind, count, min_tokens)

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def check(self, point: str, n_tokens: int = 0) -> None:
        with self._lock:
            fault = self._armed.get(point)
            if fault is None or (fault.kind == "no_kv" and n_tokens <= fault.min_tokens):
                return
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    del self._armed[point]
            self.fired += 1
        if fault.kind == "memory":
            raise MemoryError("injected fault")
        if fault.kind == "no_kv":
            raise NoKvSlotError(f"llama_decode: no KV cache slot for the batch (injected, {n_tokens} tokens)", 1)
        raise InjectedFault(f"injected fault at {point}")
