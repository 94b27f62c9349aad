"""Admission: which slot a completion gets, and how much of its prompt the slot already holds.

A slot is chosen FIFO among idle ones — the one sharing the longest prefix with the prompt
when ``cache_prompt`` is on, else the least recently used; a request pinned with ``id_slot``
waits for that slot. With ``compact`` (a GPU loop that pads the gaps between busy sequences)
the lowest idle slot id is taken unless another idle slot holds at least COMPACT_REUSE_MIN more
tokens of the prompt: every idle slot below a busy one costs a throw-away token per step for as
long as the request runs, while re-evaluating a few hundred prompt tokens on a GPU costs about
one step — so busy slots stay together. One exception: when the lowest idle slot would leave
more of the prompt to evaluate than a loop in its stable shape streams a token a step
(``stream_max``: a longer remainder is decoded as a chunk of its own, and the loop rebuilds its
decode graph for it and again for the step after), an idle slot below the highest busy one — a
gap, padded anyway — whose cached prefix leaves a streamable remainder is taken instead (the lowest
such): the case is a lowest idle slot that a context shift emptied of its prompt while gaps still
hold it.

Starting the request keeps the common prefix of the slot's KV cache (always at least one prompt
token is re-evaluated, for its logits), truncates a prompt that does not fit, and builds the
request's sampler.
"""
from __future__ import annotations

import logging

from llamacy.engine.context import Context
from llamacy.engine.model import Model
from llamacy.engine.sampling import Sampler
from llamacy.serving.multimodal import check_fits
from llamacy.serving.slots import Slot, common_prefix
from llamacy.serving.tasks import CompletionParams, Task

log = logging.getLogger(__name__)

COMPACT_REUSE_MIN = 256   # cached prompt tokens that outweigh a compact slot choice (see above)


def truncate_prompt(tokens: list[int], n_ctx: int, n_keep: int) -> list[int]:
    """A prompt that does not fit the slot: keep the first ``n_keep`` tokens and drop whole
    blocks of half the remaining context from the middle (llama.cpp's rule)."""
    n_block = max((n_ctx - n_keep) // 2, 1)
    erased_blocks = (len(tokens) - n_keep - n_block) // n_block
    return tokens[:n_keep] + tokens[n_keep + erased_blocks * n_block:]


def choose_slot(slots: list[Slot], p: CompletionParams, usable: list[bool], compact: bool = False,
                reuse_min: int = COMPACT_REUSE_MIN, stream_max: int = 0) -> Slot | None:
    """The slot for a request among the ``usable`` ones (a pinned request waits for its own).
    Without ``compact``: the longest cached prefix (with ``cache_prompt``), ties and requests
    without ``cache_prompt`` to the least recently used slot. With ``compact``: the lowest id,
    unless another slot's cached prefix is at least ``reuse_min`` tokens longer, or (``stream_max``
    > 0) the lowest id leaves more than ``stream_max`` prompt tokens to evaluate and an idle slot
    below the highest unusable one leaves at most that many."""
    if p.id_slot >= 0:
        return slots[p.id_slot] if usable[p.id_slot] else None
    idle = [s for s in slots if usable[s.id]]
    if not idle:
        return None
    if compact:
        lowest = idle[0]
        if not p.cache_prompt:
            return lowest
        cached = {s.id: common_prefix(s.cache_tokens, p.prompt_tokens) for s in idle}
        best = max(idle, key=lambda s: (cached[s.id], -s.id))
        if cached[best.id] - cached[lowest.id] >= reuse_min:
            return best
        n = len(p.prompt_tokens)
        if stream_max > 0 and n - cached[lowest.id] > stream_max:
            top = max((i for i, u in enumerate(usable) if not u), default=-1)
            for s in idle:
                if s.id < top and n - cached[s.id] <= stream_max:
                    return s
        return lowest
    if p.cache_prompt:
        return max(idle, key=lambda s: (common_prefix(s.cache_tokens, p.prompt_tokens), -s.last_used))
    return max(idle, key=lambda s: -s.last_used)


def effective_n_predict(requested: int, server_cap: int) -> int:
    """The request's n_predict, capped by the server's -n (-1 = no limit on either side)."""
    if server_cap >= 0 and (requested < 0 or requested > server_cap):
        return server_cap
    return requested


def start_request(slot: Slot, task: Task, *, ctx: Context, model: Model, system_tokens: list[int],
                  n_predict_cap: int, reuse_cache: bool, trim_kv: bool = True) -> None:
    """Put ``task`` into ``slot``: prompt (system prompt first), cache reuse, sampler.
    ``reuse_cache`` is False under self-extend, whose positions depend on the whole history.
    ``trim_kv``: drop the KV past the reused prefix here (the loop is not running); otherwise
    the generation loop drops it when it takes the sequence."""
    p: CompletionParams = task.params
    n_ctx = slot.n_ctx
    system = system_tokens if p.with_system_prompt else []
    tokens = system + p.prompt_tokens
    n_keep = len(tokens) if p.n_keep < 0 else len(system) + p.n_keep
    n_keep = min(n_keep, n_ctx - 4)
    media = p.media
    if media is not None:     # never truncated, never shifted into: the images stay whole
        check_fits(tokens, media, n_ctx)
        n_keep = max(n_keep, len(system) + media.end)
    truncated = len(tokens) >= n_ctx
    if truncated:
        tokens = truncate_prompt(tokens, n_ctx, n_keep)
        log.warning("slot %d: prompt truncated to %d tokens (n_ctx %d)", slot.id, len(tokens), n_ctx)
    sampling = p.sampling
    if sampling.repeat_last_n < 0:
        sampling.repeat_last_n = n_ctx
    if sampling.dry_penalty_last_n < 0:
        sampling.dry_penalty_last_n = n_ctx
    sampler = Sampler(model, sampling)
    if sampling.penalty_prompt is None:
        sampler.accept_many([t for t in tokens[len(system):] if t >= 0])   # no image placeholders
    n_common = common_prefix(slot.cache_tokens, tokens)
    if not reuse_cache:
        n_common = 0
    elif not p.cache_prompt:
        n_common = min(n_common, len(system))   # the shared system prompt is always reused
    n_common = max(0, min(n_common, len(tokens) - 1))
    if media is not None:
        n_common = media.safe_prefix(n_common, len(system))
    if n_common < slot.n_past:
        if trim_kv and not ctx.seq_rm(slot.id, n_common, -1):
            ctx.seq_rm(slot.id, -1, -1)
            n_common = 0
        del slot.cache_tokens[n_common:]
    slot.start(task, sampler, tokens, effective_n_predict(p.n_predict, n_predict_cap), n_keep, truncated)
    log.debug("slot %d: task %d started, %d prompt tokens, %d cached", slot.id, task.id, len(tokens), n_common)
