"""The /slots endpoints' operations on an idle slot — erase, save to a file, restore from one —
each run on the engine thread between two steps of the loop (``Scheduler._in_engine``), the
slot held RESERVED meanwhile so no request takes it. A mixin of ``Scheduler``."""
from __future__ import annotations

from llamacy.errors import InvalidRequestError, UnavailableError
from llamacy.serving.slots import Slot, SlotState


class SlotOperations:
    def idle_slot(self, id_slot: int) -> Slot:
        if not (0 <= id_slot < self.n_parallel):
            raise InvalidRequestError(f"id_slot {id_slot} out of range [0, {self.n_parallel})")
        slot = self.slots[id_slot]
        if slot.is_busy:
            raise UnavailableError(f"slot {id_slot} is busy")
        return slot

    async def erase_slot(self, id_slot: int) -> int:
        slot = self.idle_slot(id_slot)
        n = slot.n_past
        slot.state = SlotState.RESERVED   # not chosen by the loop until the engine has run the job
        try:
            await self._in_engine(self.ctx.seq_rm, slot.id, -1, -1)
        finally:
            slot.state = SlotState.IDLE
        slot.cache_tokens = []
        return n

    async def save_slot(self, id_slot: int, path: str, before_write=None) -> tuple[int, int]:
        """Save an idle slot's tokens and KV state to ``path``: (tokens saved, bytes written).
        ``before_write(n_bytes)`` runs first on the engine thread with the size the file will
        have (to refuse early, e.g. for lack of space). The slot is left as it was, whatever happens."""
        slot = self.idle_slot(id_slot)
        tokens = list(slot.cache_tokens)
        slot.state = SlotState.RESERVED

        def save() -> int:
            if before_write is not None:
                before_write(self.ctx.seq_file_size(slot.id, len(tokens)))
            return self.ctx.seq_save_file(path, slot.id, tokens)

        try:
            n = await self._in_engine(save)
        finally:
            slot.state = SlotState.IDLE
        return len(tokens), n

    async def restore_slot(self, id_slot: int, path: str) -> tuple[int, int]:
        slot = self.idle_slot(id_slot)
        slot.state = SlotState.RESERVED
        slot.cache_tokens = []
        try:
            n, tokens = await self._in_engine(self._load_seq, slot.id, path, slot.n_ctx)
        finally:
            slot.state = SlotState.IDLE
        slot.cache_tokens = tokens
        return len(tokens), n

    def _load_seq(self, seq_id: int, path: str, capacity: int):
        """Engine thread: replace a sequence by a saved one (left empty if the file is bad)."""
        self.ctx.seq_rm(seq_id, -1, -1)
        try:
            return self.ctx.seq_load_file(path, seq_id, capacity)
        except Exception:
            self.ctx.seq_rm(seq_id, -1, -1)
            raise
