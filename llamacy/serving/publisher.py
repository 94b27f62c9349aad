"""Publishing the generation loop's steps: token ids → slot bookkeeping, text and task events.

The C loop (engine/generation.pyx) hands over each step as entries: prompt tokens decoded, a
context shift, and every sequence's sampled token with its end flags. Here, on the IOLoop,
each entry updates its slot — the tokens in its KV (for the prompt cache), its counters — and
the sampled token becomes text (UTF-8 kept whole, stop strings held back) and an event for
the request's stream: one ``Partial`` per stream per step, and a ``Final`` at the end.

The loop decides when a sequence ends (on token ids and bytes); the text layer must agree. It
does by construction — a stop string found in the bytes is found in the text — and should
they ever differ, the slot ends here anyway and the loop is told to stop that sequence.
"""
from __future__ import annotations

import logging
import time

from llamacy.engine.generation import (END_CANCELLED, END_CONTEXT, END_NOTHING, END_PROMPT_ONLY, END_STOP,
                                       ENTRY_PREFILL, ENTRY_SHIFT)
from llamacy.serving.slots import Slot, SlotState
from llamacy.serving.tasks import CANCELLED, Final, Partial, Progress, Timings, TokenProbs

log = logging.getLogger(__name__)


class StepPublisher:
    def __init__(self, slots: list[Slot], pieces: list[bytes], is_eog: bytearray, stats, on_finish) -> None:
        self.slots = slots
        self.pieces = pieces
        self.is_eog = is_eog
        self.stats = stats
        self.on_finish = on_finish      # called with each slot a request leaves (the scheduler frees it)

    def apply(self, seconds: float, n_prompt: int, n_generated: int, entries: list) -> None:
        """One step of the loop."""
        now = time.perf_counter()
        stats = self.stats
        n_all = n_prompt + n_generated
        stats.n_decode_total += 1
        stats.n_busy_slots_total += len({entry[1] for entry in entries})
        if n_prompt:
            stats.n_prompt_tokens_processed_total += n_prompt
            stats.t_prompt_processing_total += seconds * n_prompt / n_all
        if n_generated:
            stats.n_tokens_predicted_total += n_generated
            stats.t_tokens_generation_total += seconds * n_generated / n_all
        slots = self.slots
        for kind, seq, value, decoded, flags, probs in entries:
            slot = slots[seq]
            if slot.task is None:      # already finished here (the loop learns it a step late)
                continue
            if kind == ENTRY_PREFILL:
                start = slot.n_past
                progress = slot.stream and slot.task.params.return_progress
                if progress and not slot.n_prompt_evaluated:
                    self._progress(slot, slot.t_start)   # as before the first batch: what the cache held
                slot.cache_tokens.extend(slot.prompt_tokens[start:start + value])
                slot.n_prompt_evaluated += value
                if progress:
                    self._progress(slot, now)
                if slot.n_past >= len(slot.prompt_tokens):
                    slot.t_prompt_done = now
                    slot.state = SlotState.GENERATING
            elif kind == ENTRY_SHIFT:
                log.info("slot %d: context shift, keeping %d, discarding %d", slot.id, slot.n_keep, value)
                del slot.cache_tokens[slot.n_keep:slot.n_keep + value]
                slot.truncated = True
            else:
                if decoded >= 0:
                    slot.cache_tokens.append(decoded)
                self._token(slot, value, flags, probs)

    @staticmethod
    def _progress(slot: Slot, now: float) -> None:
        slot.task.push(Progress(total=len(slot.prompt_tokens), cache=slot.n_past - slot.n_prompt_evaluated,
                                processed=slot.n_past, time_ms=(now - slot.t_start) * 1e3))

    def _token(self, slot: Slot, tok: int, flags: int, probs) -> None:
        if slot.task.cancelled or flags & END_CANCELLED:
            return self.finish(slot, notify=False)
        if flags & END_PROMPT_ONLY:
            return self.finish(slot)
        if flags & END_CONTEXT:
            slot.truncated = True
            return self.finish(slot, stopped_limit=True)
        if flags & END_NOTHING:   # nothing allowed: a grammar that is complete while EOG is banned
            return self.finish(slot, stopped_eos=True)
        slot.n_decoded += 1
        if self.is_eog[tok]:
            return self.finish(slot, stopped_eos=True)
        slot.pending_token = tok
        slot.generated.append(tok)
        slot.tokens_unsent.append(tok)
        piece = self.pieces[tok]
        new_text = slot.text.push(piece)
        if probs is not None:
            tp = TokenProbs(tok, piece, probs)
            slot.probs.append(tp)
            slot.probs_unsent.append(tp)
        if slot.text.stopping_word:
            self.finish(slot, stopped_word=True, last_text=new_text)
        elif 0 <= slot.n_predict <= slot.n_decoded:
            self.finish(slot, stopped_limit=True, last_text=new_text)
        elif flags:
            log.warning("slot %d: the loop ended the sequence (flags %d) where the text did not", slot.id, flags)
            self.finish(slot, stopped_word=bool(flags & END_STOP), stopped_limit=not flags & END_STOP,
                        last_text=new_text)
        elif slot.stream and (new_text or slot.probs_unsent):
            slot.task.push(Partial(new_text, slot.probs_unsent, slot.tokens_unsent))
            slot.probs_unsent, slot.tokens_unsent = [], []

    def finish(self, slot: Slot, *, stopped_eos=False, stopped_limit=False, stopped_word=False,
               notify=True, last_text: str = "") -> None:
        """End the slot's request — with its Final event, or CANCELLED when not ``notify`` — and
        hand the slot back to the scheduler."""
        task = slot.task
        if task is not None:
            self.stats.n_prompt_tokens_cached_total += len(slot.prompt_tokens) - slot.n_prompt_evaluated
            self.stats.n_tokens_max = max(self.stats.n_tokens_max, slot.n_past)
        if task is not None and notify:
            tail = last_text + slot.text.flush()
            if slot.stream and (tail or slot.probs_unsent):
                task.push(Partial(tail, slot.probs_unsent, slot.tokens_unsent))
            now = time.perf_counter()
            t_prompt_done = slot.t_prompt_done or now
            task.push(Final(
                content=slot.text.text, probs=slot.probs, id_slot=slot.id, stopped_eos=stopped_eos,
                stopped_limit=stopped_limit, stopped_word=stopped_word, stopping_word=slot.text.stopping_word,
                tokens_predicted=slot.n_decoded, tokens_evaluated=len(slot.prompt_tokens), tokens_cached=slot.n_past,
                truncated=slot.truncated, tokens=slot.generated,
                timings=Timings(n_prompt=slot.n_prompt_evaluated, prompt_ms=(t_prompt_done - slot.t_start) * 1e3,
                                n_predicted=slot.n_decoded, predicted_ms=(now - t_prompt_done) * 1e3,
                                n_cache=len(slot.prompt_tokens) - slot.n_prompt_evaluated)))
        elif task is not None:
            task.push(CANCELLED)
        self.on_finish(slot)
