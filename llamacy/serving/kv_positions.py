"""KV position math for a slot's sequence: prompt truncation, context shift, self-extend.

These decide which tokens stay in a slot's KV cache and at which positions once a
sequence outgrows the slot's context. They run on the IOLoop between steps (never beside
a decode), as the scheduler's other KV operations do.
"""
from __future__ import annotations

import logging

from llamacy.engine.context import Context
from llamacy.serving.slots import Slot

log = logging.getLogger(__name__)


def truncate_prompt(tokens: list[int], n_ctx: int, n_keep: int) -> list[int]:
    """A prompt that does not fit the slot: keep the first ``n_keep`` tokens and drop whole
    blocks of half the remaining context from the middle (llama.cpp's rule)."""
    n_block = max((n_ctx - n_keep) // 2, 1)
    erased_blocks = (len(tokens) - n_keep - n_block) // n_block
    return tokens[:n_keep] + tokens[n_keep + erased_blocks * n_block:]


def context_shift(ctx: Context, slot: Slot) -> None:
    """The slot's context is full: discard half of what follows the first n_keep tokens and
    move the rest back, so generation can go on."""
    n_keep = slot.n_keep
    n_left = slot.n_past - n_keep
    n_discard = max(n_left // 2, 1)
    log.info("slot %d: context shift, keeping %d, discarding %d", slot.id, n_keep, n_discard)
    ctx.seq_rm(slot.id, n_keep, n_keep + n_discard)
    ctx.seq_add(slot.id, n_keep + n_discard, slot.n_past, -n_discard)
    del slot.cache_tokens[n_keep:n_keep + n_discard]
    slot.truncated = True


def self_extend(ctx: Context, slot: Slot, ga_n: int, ga_w: int) -> int:
    """Self-extend (group attention) before the slot's next token: once the sequence passes
    ga_i + ga_w, divide the positions of the oldest window by ga_n; returns the next position."""
    n, w = ga_n, ga_w
    while slot.n_past_se >= slot.ga_i + w:
        ib = (n * slot.ga_i) // w
        bd = (w // n) * (n - 1)
        dd = (w // n) - ib * bd - w
        ctx.seq_add(slot.id, slot.ga_i, slot.n_past_se, ib * bd)
        ctx.seq_div(slot.id, slot.ga_i + ib * bd, slot.ga_i + ib * bd + w, n)
        ctx.seq_add(slot.id, slot.ga_i + ib * bd + w, slot.n_past_se + ib * bd, dd)
        slot.n_past_se -= bd
        slot.ga_i += w // n
    return slot.n_past_se
