"""Typed requests the scheduler runs, and the stream of events it sends back.

The HTTP layer builds these from JSON (llamacy/api); the serving layer never sees JSON.
Every task's stream ends exactly once — with a ``Final``, an ``EmbeddingResults``, an
exception, or ``CANCELLED`` — so a handler awaiting ``events()`` always gets to finish.
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
    media: Any = None                # serving.multimodal.MediaPrompt: the prompt's images (placeholders in prompt_tokens)
    return_progress: bool = False    # stream a Progress event per prompt batch


@dataclass
class EmbeddingParams:
    """The inputs of one embedding request, each already tokenized (one vector, or one per token, each)."""

    inputs: list[list[int]]
    media: list | None = None        # per input: its MediaPrompt (images), or None for text only


@dataclass
class TokenProbs:
    token: int
    piece: bytes
    probs: list[tuple[int, float]]


@dataclass
class Partial:
    """Newly generated text (streamed); ``probs`` holds n_probs data for its tokens, ``tokens``
    the ids sampled since the last Partial."""

    content: str
    probs: list[TokenProbs]
    tokens: list[int] = field(default_factory=list)


@dataclass
class Progress:
    """Prompt processing so far (``return_progress``): ``total`` prompt tokens, ``cache`` of them
    reused from the slot's cache, ``processed`` (cache included) decoded by now."""

    total: int
    cache: int
    processed: int
    time_ms: float


@dataclass
class Timings:
    """Where a completion's time went; the API layer turns it into the spec's ``timings``."""

    n_prompt: int            # prompt tokens evaluated (not taken from the cache)
    prompt_ms: float
    n_predicted: int
    predicted_ms: float
    n_cache: int = 0         # prompt tokens taken from the cache


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
    timings: Timings
    tokens: list[int] = field(default_factory=list)    # the generated token ids


@dataclass
class EmbeddingResult:
    embedding: list  # one vector (pooled) or one per token (pooling none)
    n_tokens: int


@dataclass
class EmbeddingResults:
    """The end of an embedding request: one result per input, in input order."""

    items: list[EmbeddingResult]


class _Cancelled:
    """The end of a stream the client gave up on (no result follows)."""

    def __repr__(self) -> str:
        return "CANCELLED"


CANCELLED = _Cancelled()
_TERMINAL = (Final, EmbeddingResults, BaseException, _Cancelled)


class Task:
    """A request in flight: the scheduler pushes events, the handler consumes them.

    Only the scheduler pushes; a handler whose client went away calls
    ``Scheduler.cancel(task)``, which ends the stream with ``CANCELLED``.
    """

    __slots__ = ("id", "params", "_events", "_wakeup", "cancelled", "done", "id_slot")

    def __init__(self, params: CompletionParams | EmbeddingParams) -> None:
        self.id = next(_task_ids)
        self.params = params
        self._events: list = []
        self._wakeup = asyncio.Event()
        self.cancelled = False
        self.done = False
        self.id_slot = -1

    @property
    def is_embedding(self) -> bool:
        return isinstance(self.params, EmbeddingParams)

    def push(self, event) -> None:
        """Add an event; after the terminal one, later events are dropped (a stream ends once)."""
        if self.done:
            return
        self._events.append(event)
        if isinstance(event, _TERMINAL):
            self.done = True
        self._wakeup.set()

    async def events(self):
        """Yield events until the final one; an exception event is raised; CANCELLED just ends."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            events, self._events = self._events, []
            for ev in events:
                if ev is CANCELLED:
                    return
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
                if isinstance(ev, (Final, EmbeddingResults)):
                    return
