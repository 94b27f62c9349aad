"""Typed requests the scheduler runs, and the stream of events it sends back.

The HTTP layer builds these from JSON (llamacy/api); the serving layer never sees JSON.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from llamacy.engine.sampling_params import SamplingParams

_task_ids = itertools.count()


@dataclass
class CompletionParams:
    """A /completion request after validation: the prompt already tokenized."""

    prompt_tokens: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n_predict: int = -1
    n_keep: int = 0
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    cache_prompt: bool = False
    id_slot: int = -1
    prompt: Any = ""                 # as the client sent it, echoed in results
    with_system_prompt: bool = True  # start from the shared system prompt, if any


@dataclass
class EmbeddingParams:
    """One input to embed (already tokenized)."""

    prompt_tokens: list[int]


@dataclass
class TokenProbs:
    token: int
    piece: bytes
    probs: list[tuple[int, float]]


@dataclass
class Partial:
    """Newly generated text (streamed); ``probs`` holds n_probs data for its tokens."""

    content: str
    probs: list[TokenProbs]


@dataclass
class Final:
    """The end of a completion, with every result field the spec names."""

    content: str
    probs: list[TokenProbs]
    id_slot: int
    stopped_eos: bool
    stopped_limit: bool
    stopped_word: bool
    stopping_word: str
    tokens_predicted: int
    tokens_evaluated: int
    tokens_cached: int
    truncated: bool
    timings: dict


@dataclass
class EmbeddingResult:
    embedding: list  # one vector (pooled) or one per token (pooling none)
    n_tokens: int


class Task:
    """A request in flight: the scheduler pushes events, the handler consumes them."""

    __slots__ = ("id", "params", "kind", "_events", "_wakeup", "cancelled", "done", "id_slot")

    def __init__(self, params: CompletionParams | EmbeddingParams, kind: str = "completion") -> None:
        self.id = next(_task_ids)
        self.params = params
        self.kind = kind
        self._events: list = []
        self._wakeup = asyncio.Event()
        self.cancelled = False
        self.done = False
        self.id_slot = -1

    def push(self, event) -> None:
        self._events.append(event)
        if isinstance(event, (Final, EmbeddingResult, BaseException)):
            self.done = True
        self._wakeup.set()

    def cancel(self) -> None:
        """Called by the handler when the client goes away; the scheduler frees the slot."""
        self.cancelled = True

    async def events(self):
        """Yield events until the final one; an exception event is raised."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            events, self._events = self._events, []
            for ev in events:
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
                if isinstance(ev, (Final, EmbeddingResult)):
                    return
