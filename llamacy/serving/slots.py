"""A slot: one sequence of the shared KV cache and the request it is serving.

State machine: IDLE → PROMPT (prompt chunks being decoded) → GENERATING → IDLE.
``cache_tokens`` always equals the tokens whose KV entries sit in the slot's sequence, so a
later request with ``cache_prompt`` can reuse their common prefix.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from llamacy.engine.sampling import Sampler
from llamacy.serving.tasks import Task, TokenProbs
from llamacy.serving.text import TextStream


class SlotState(enum.IntEnum):
    IDLE = 0
    PROMPT = 1
    GENERATING = 2
    RESERVED = 3    # held by an embedding batch or a slot restore; not scheduled


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Slot:
    def __init__(self, id: int, n_ctx: int) -> None:
        self.id = id
        self.n_ctx = n_ctx
        self.state = SlotState.IDLE
        self.task: Task | None = None
        self.cache_tokens: list[int] = []
        self.last_used = 0.0
        self.kv_suspect = False  # a failed step may have left the KV unlike cache_tokens: clear it on release
        self._reset_request()

    def _reset_request(self) -> None:
        self.sampler: Sampler | None = None
        self.prompt_tokens: list[int] = []
        self.text: TextStream | None = None
        self.pending_token = -1      # sampled, not yet decoded into the KV cache
        self.n_decoded = 0
        self.n_predict = -1
        self.n_keep = 0
        self.truncated = False
        self.stream = False
        self.n_probs = 0
        self.probs: list[TokenProbs] = []
        self.probs_unsent: list[TokenProbs] = []
        self.generated: list[int] = []       # sampled token ids (end-of-generation tokens excluded)
        self.tokens_unsent: list[int] = []
        self.t_start = 0.0
        self.t_prompt_done = 0.0
        self.n_prompt_evaluated = 0

    @property
    def n_past(self) -> int:
        return len(self.cache_tokens)

    @property
    def is_busy(self) -> bool:
        return self.state != SlotState.IDLE

    def start(self, task: Task, sampler: Sampler, prompt_tokens: list[int], n_predict: int,
              n_keep: int, truncated: bool) -> None:
        p = task.params
        self._reset_request()
        self.task = task
        task.id_slot = self.id
        self.sampler = sampler
        self.prompt_tokens = prompt_tokens
        self.n_predict = n_predict
        self.n_keep = n_keep
        self.truncated = truncated
        self.stream = p.stream
        self.n_probs = p.sampling.n_probs
        self.text = TextStream(p.stop)
        self.state = SlotState.PROMPT
        self.t_start = time.perf_counter()

    def release(self) -> None:
        self.state = SlotState.IDLE
        self.task = None
        self.last_used = time.perf_counter()
        self._reset_request()

    def snapshot(self) -> "SlotSnapshot":
        """A read-only view of the slot for /slots and /health (the API layer shapes the JSON)."""
        task = self.task
        return SlotSnapshot(
            id=self.id, n_ctx=self.n_ctx, task_id=task.id if task is not None else -1,
            params=task.params if task is not None else None, is_processing=self.is_busy,
            has_next_token=self.state == SlotState.GENERATING, n_decoded=self.n_decoded,
            n_remain=(self.n_predict - self.n_decoded) if self.n_predict >= 0 else -1)


@dataclass(frozen=True)
class SlotSnapshot:
    id: int
    n_ctx: int
    task_id: int
    params: object          # the running request's CompletionParams, or None while idle
    is_processing: bool
    has_next_token: bool
    n_decoded: int
    n_remain: int
