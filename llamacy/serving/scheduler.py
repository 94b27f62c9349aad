"""The batch loop: admission, slot choice, prompt cache, context shift, continuous batching.

One coroutine on the IOLoop runs steps: assemble a Batch (prompt chunks of new requests,
bounded by n_batch, plus one token for every generating slot), hand it to the one-thread
engine executor (decode + sample every slot, all GIL-released C calls), then publish each
slot's token as text and check stops. New requests join between steps. While a step is pure
generation and nothing waits, the engine thread goes straight on to the next step and the
IOLoop publishes behind it (see ``_continuation``). Everything that touches the context runs
on the engine thread or between steps, never beside a decode.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from llamacy.engine.context import Batch, Context
from llamacy.engine.model import Model
from llamacy.engine.sampling import Sampler, sample_batch
from llamacy.errors import InvalidRequestError, LlamacyError, UnavailableError
from llamacy.serving.slots import Slot, SlotState, common_prefix
from llamacy.serving.tasks import CompletionParams, EmbeddingResult, Final, Partial, Task, TokenProbs

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters behind /metrics and /health."""

    n_prompt_tokens_processed_total: int = 0
    t_prompt_processing_total: float = 0.0      # seconds
    n_tokens_predicted_total: int = 0
    t_tokens_generation_total: float = 0.0      # seconds


class Scheduler:
    """Owns the context's sequences and runs the decode loop."""

    def __init__(self, model: Model, ctx: Context, *, n_parallel: int, n_batch: int, n_predict: int = -1,
                 embed_ctx: Context | None = None, grp_attn_n: int = 1, grp_attn_w: int = 512) -> None:
        self.model = model
        self.ctx = ctx
        self.vocab = model.vocab
        self.n_parallel = n_parallel
        self.n_batch = max(min(n_batch, ctx.n_batch), n_parallel)
        self.n_predict_default = n_predict
        # Embeddings run in their own context (unified KV, pooling, embeddings on): libllama pools
        # multi-sequence batches correctly only with a unified KV cache, while generation wants a
        # stream per slot so a slot's numbers never depend on its neighbours.
        self.embed_ctx = embed_ctx
        if grp_attn_n < 1 or (grp_attn_n > 1 and (grp_attn_w % grp_attn_n or grp_attn_w < grp_attn_n)):
            raise ValueError("--grp-attn-w must be a multiple of --grp-attn-n")
        self.ga_n, self.ga_w = grp_attn_n, grp_attn_w   # self-extend (group attention); 1 = off
        self.embed_batch = Batch(embed_ctx.n_batch, 1) if embed_ctx is not None else None
        n_ctx_slot = ctx.n_ctx // n_parallel
        self.slots = [Slot(i, n_ctx_slot) for i in range(n_parallel)]
        self.queue: collections.deque[Task] = collections.deque()
        self.batch = Batch(self.n_batch, 1)
        self.pieces = self.vocab.pieces
        self.is_eog = bytearray(self.vocab.n_vocab)
        for t in self.vocab.eog_tokens():
            self.is_eog[t] = 1
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llamacy-engine")
        self._wake = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._closing = False
        self._engine_jobs: collections.deque = collections.deque()   # (fn, args, future): run between steps
        self.system_tokens: list[int] = []     # shared prefix of every slot (the system prompt)
        self._system_pending: list[int] | None = None

    # --- public API (IOLoop thread) -------------------------------------------------
    @property
    def n_ctx_slot(self) -> int:
        return self.slots[0].n_ctx

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._runner is not None:
            # Let the loop end after the step in flight: releasing slots first dropped their
            # samplers while the engine thread was still sampling with them.
            try:
                await self._runner
            except Exception:
                log.exception("decode loop failed while closing")
        for _, _, fut in self._engine_jobs:
            if not fut.done():
                fut.set_exception(UnavailableError("server is shutting down"))
        self._engine_jobs.clear()
        for task in list(self.queue):
            task.push(UnavailableError("server is shutting down"))
        self.queue.clear()
        for slot in self.slots:
            if slot.task is not None:
                slot.task.push(UnavailableError("server is shutting down"))
                slot.release()
        self._executor.shutdown(wait=True)

    def submit(self, task: Task) -> Task:
        if self._closing:
            raise UnavailableError("server is shutting down")
        p = task.params
        if isinstance(p, CompletionParams) and p.id_slot >= self.n_parallel:
            raise InvalidRequestError(f"id_slot {p.id_slot} out of range [0, {self.n_parallel})")
        self.queue.append(task)
        self._wake.set()
        return task

    def set_system_prompt(self, tokens: list[int]) -> None:
        """Replace the system prompt. It is decoded once, when no slot is busy, into slot 0's
        sequence and copied into every other slot's; requests wait until then."""
        if len(tokens) >= self.n_ctx_slot - 4:
            raise InvalidRequestError(f"system prompt has {len(tokens)} tokens; the slot context is {self.n_ctx_slot}")
        self._system_pending = list(tokens)
        self._wake.set()

    @property
    def n_idle(self) -> int:
        return sum(not s.is_busy for s in self.slots)

    @property
    def n_processing(self) -> int:
        return self.n_parallel - self.n_idle

    @property
    def n_deferred(self) -> int:
        return len(self.queue)

    def kv_tokens(self) -> int:
        return sum(s.n_past for s in self.slots)

    # --- slot operations used by the /slots endpoints --------------------------------
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

    async def save_slot(self, id_slot: int, path: str) -> tuple[int, int]:
        slot = self.idle_slot(id_slot)
        tokens = list(slot.cache_tokens)
        slot.state = SlotState.RESERVED
        try:
            n = await self._in_engine(self.ctx.seq_save_file, path, slot.id, tokens)
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

    async def _in_engine(self, fn, *args):
        """Run ``fn`` on the engine thread between two steps of the loop, when the loop itself
        is not using the context (it calls seq_rm/seq_add on the IOLoop thread while admitting
        and shifting): so one thread at a time touches the context."""
        if self._closing or self._runner is None or self._runner.done():
            raise UnavailableError("server is shutting down")
        fut = asyncio.get_running_loop().create_future()
        self._engine_jobs.append((fn, args, fut))
        self._wake.set()
        return await fut

    async def _run_engine_jobs(self, loop) -> None:
        while self._engine_jobs:
            fn, args, fut = self._engine_jobs.popleft()
            try:
                res = await loop.run_in_executor(self._executor, fn, *args)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(res)

    # --- the loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._run_engine_jobs(loop)
            self._drop_cancelled()
            if self._system_pending is not None and not any(slot.is_busy for slot in self.slots):
                await self._apply_system_prompt(loop)
            if self._system_pending is None:   # new work waits for a pending system prompt
                self._admit()
            if self.queue and self.queue[0].kind == "embedding":
                await self._embedding_step(loop)
                continue
            plan = self._assemble()
            if plan is None:
                if self._engine_jobs:      # queued while this iteration awaited something else
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                result = await loop.run_in_executor(self._executor, self._decode_and_sample, plan, loop)
            except LlamacyError as exc:
                log.error("decode failed: %s", exc)
                self._fail_batch(plan, exc)
                continue
            self._publish(*result)

    async def _apply_system_prompt(self, loop) -> None:
        tokens, self._system_pending = self._system_pending, None
        for slot in self.slots:
            slot.state = SlotState.RESERVED
        try:
            await loop.run_in_executor(self._executor, self._decode_system_prompt, tokens)
            self.system_tokens = tokens
            self.stats.n_prompt_tokens_processed_total += len(tokens)
        except LlamacyError as exc:
            log.error("system prompt failed: %s", exc)
            self.ctx.memory_clear()
            self.system_tokens = []
            tokens = []
        finally:
            for slot in self.slots:
                slot.state = SlotState.IDLE
                slot.cache_tokens = list(tokens)
        log.info("system prompt set: %d tokens in %d slots", len(tokens), len(self.slots))

    def _decode_system_prompt(self, tokens: list[int]) -> None:
        """Engine thread: decode the system prompt into sequence 0, copy it to the others."""
        self.ctx.memory_clear()
        if not tokens:
            return
        for start in range(0, len(tokens), self.n_batch):
            self.batch.clear()
            self.batch.add_sequence(tokens[start:start + self.n_batch], start, 0, False)
            self.ctx.decode(self.batch)
        for slot in self.slots[1:]:
            self.ctx.seq_cp(0, slot.id)

    def _drop_cancelled(self) -> None:
        if any(t.cancelled for t in self.queue):
            self.queue = collections.deque(t for t in self.queue if not t.cancelled)
        for slot in self.slots:
            if slot.task is not None and slot.task.cancelled:
                log.info("slot %d: task %d cancelled by client", slot.id, slot.task.id)
                self._finish(slot, notify=False)

    def _admit(self) -> None:
        """Give queued completion tasks a slot (FIFO; a pinned task waits for its slot)."""
        if not self.queue:
            return
        waiting = collections.deque()
        while self.queue:
            task = self.queue.popleft()
            if task.kind != "completion":
                waiting.append(task)
                waiting.extend(self.queue)
                self.queue.clear()
                break
            slot = self._choose_slot(task.params)
            if slot is None:
                waiting.append(task)
                continue
            try:
                self._start(slot, task)
            except LlamacyError as exc:
                slot.release()
                task.push(exc)
        self.queue = waiting

    def _choose_slot(self, p: CompletionParams) -> Slot | None:
        if p.id_slot >= 0:
            slot = self.slots[p.id_slot]
            return None if slot.is_busy else slot
        idle = [s for s in self.slots if not s.is_busy]
        if not idle:
            return None
        if p.cache_prompt:
            return max(idle, key=lambda s: (common_prefix(s.cache_tokens, p.prompt_tokens), -s.last_used))
        return min(idle, key=lambda s: s.last_used)

    def _start(self, slot: Slot, task: Task) -> None:
        p: CompletionParams = task.params
        n_ctx = slot.n_ctx
        system = self.system_tokens if p.with_system_prompt else []
        tokens = system + p.prompt_tokens
        n_keep = len(tokens) if p.n_keep < 0 else len(system) + p.n_keep
        n_keep = min(n_keep, n_ctx - 4)
        truncated = False
        if len(tokens) >= n_ctx:
            # keep the first n_keep tokens, drop whole blocks from the middle (llama.cpp's rule)
            n_block = max((n_ctx - n_keep) // 2, 1)
            erased_blocks = (len(tokens) - n_keep - n_block) // n_block
            tokens = tokens[:n_keep] + tokens[n_keep + erased_blocks * n_block:]
            truncated = True
            log.warning("slot %d: prompt truncated to %d tokens (n_ctx %d)", slot.id, len(tokens), n_ctx)
        sampling = p.sampling
        if sampling.repeat_last_n < 0:
            sampling.repeat_last_n = n_ctx
        sampler = Sampler(self.model, sampling)
        if sampling.penalty_prompt is None:
            sampler.accept_many(tokens[len(system):])
        n_predict = p.n_predict
        if n_predict < 0 or (self.n_predict_default >= 0 and n_predict > self.n_predict_default):
            n_predict = self.n_predict_default if self.n_predict_default >= 0 else n_predict
        # prompt cache: keep the common prefix, always re-evaluate at least one token for logits
        n_common = common_prefix(slot.cache_tokens, tokens)
        if self.ga_n > 1:
            n_common = 0    # self-extend positions depend on the whole history: start afresh
        elif not p.cache_prompt:
            n_common = min(n_common, len(system))   # the shared system prompt is always reused
        n_common = max(0, min(n_common, len(tokens) - 1))
        if n_common < slot.n_past:
            if not self.ctx.seq_rm(slot.id, n_common, -1):
                self.ctx.seq_rm(slot.id, -1, -1)
                n_common = 0
            del slot.cache_tokens[n_common:]
        slot.start(task, sampler, tokens, n_predict, n_keep, truncated)
        slot.ga_i = 0
        slot.n_past_se = slot.n_past
        log.debug("slot %d: task %d started, %d prompt tokens, %d cached", slot.id, task.id, len(tokens), n_common)

    def _assemble(self):
        """Fill the batch: one token per generating slot, then prompt chunks up to n_batch."""
        batch = self.batch
        batch.clear()
        outputs: list[tuple[Slot, int]] = []       # (slot, batch index) to sample
        added: list[tuple[Slot, list[int]]] = []   # tokens entering each slot's KV
        meta: list[tuple[int, int] | None] = []    # per output: (position, tokens allowed after this one)
        for slot in self.slots:
            if slot.state != SlotState.GENERATING:
                continue
            if slot.n_past + 1 > slot.n_ctx:
                if self.ga_n > 1:   # self-extend keeps every token: the context is simply full
                    slot.truncated = True
                    self._finish(slot, stopped_limit=True)
                    continue
                self._context_shift(slot)
            tok = slot.pending_token
            if self.ga_n > 1:
                pos = self._self_extend(slot)
                slot.n_past_se += 1
            else:
                pos = slot.n_past
            outputs.append((slot, batch.add(tok, pos, slot.id, True)))
            added.append((slot, [tok]))
            meta.append((pos, slot.n_predict - slot.n_decoded - 1 if slot.n_predict >= 0 else 1 << 30))
        budget = self.n_batch - batch.n_tokens
        for slot in self.slots:
            if slot.state != SlotState.PROMPT or budget <= 0:
                continue
            start = slot.n_past
            chunk = slot.prompt_tokens[start:start + budget]
            pos0 = start
            if self.ga_n > 1:   # self-extend: never cross a window edge inside one batch
                pos0 = self._self_extend(slot)
                chunk = chunk[:slot.ga_i + self.ga_w - pos0]
                slot.n_past_se += len(chunk)
            last = start + len(chunk) == len(slot.prompt_tokens)
            want = last and slot.n_predict != 0
            idx = batch.add_sequence(chunk, pos0, slot.id, want)
            budget -= len(chunk)
            added.append((slot, chunk))
            if want:
                outputs.append((slot, idx))
                meta.append(None)
        if batch.n_tokens == 0:
            # prompts fully cached with n_predict == 0 finish without a decode
            for slot in self.slots:
                if slot.state == SlotState.PROMPT and slot.n_past >= len(slot.prompt_tokens):
                    self._finish(slot)
            return None
        return outputs, added, meta

    def _self_extend(self, slot: Slot) -> int:
        """Self-extend before a generated token: group the oldest window of positions by
        ga_n (KV position divide) once the sequence passes ga_i + ga_w; returns its position."""
        n, w = self.ga_n, self.ga_w
        while slot.n_past_se >= slot.ga_i + w:
            ib = (n * slot.ga_i) // w
            bd = (w // n) * (n - 1)
            dd = (w // n) - ib * bd - w
            self.ctx.seq_add(slot.id, slot.ga_i, slot.n_past_se, ib * bd)
            self.ctx.seq_div(slot.id, slot.ga_i + ib * bd, slot.ga_i + ib * bd + w, n)
            self.ctx.seq_add(slot.id, slot.ga_i + ib * bd + w, slot.n_past_se + ib * bd, dd)
            slot.n_past_se -= bd
            slot.ga_i += w // n
        return slot.n_past_se

    def _context_shift(self, slot: Slot) -> None:
        n_keep = slot.n_keep
        n_left = slot.n_past - n_keep
        n_discard = max(n_left // 2, 1)
        log.info("slot %d: context shift, keeping %d, discarding %d", slot.id, n_keep, n_discard)
        self.ctx.seq_rm(slot.id, n_keep, n_keep + n_discard)
        self.ctx.seq_add(slot.id, n_keep + n_discard, slot.n_past, -n_discard)
        del slot.cache_tokens[n_keep:n_keep + n_discard]
        slot.truncated = True

    def _decode_and_sample(self, plan, loop):
        """Engine thread: decode the batch, sample every output in one call; then, while the
        step was pure generation and nothing waits for the loop, decode the next step right
        away (handing this step's results to the IOLoop to publish meanwhile), so the engine
        never idles for the IOLoop's turnaround. Returns the last step for the loop to publish."""
        while True:
            outputs = plan[0]
            t0 = time.perf_counter()
            self.ctx.decode(self.batch)
            probs = [slot.sampler.top_probs(self.ctx, idx, slot.n_probs) if slot.n_probs > 0 else None
                     for slot, idx in outputs]
            tokens = sample_batch(self.ctx, [slot.sampler for slot, _ in outputs], [idx for _, idx in outputs])
            dt = time.perf_counter() - t0
            following = self._continuation(plan, tokens)
            if following is None:
                return plan, tokens, probs, dt
            loop.call_soon_threadsafe(self._publish, plan, tokens, probs, dt)
            plan = following

    def _continuation(self, plan, tokens: list[int]):
        """Engine thread: the next generation step, when it can be decided without the IOLoop —
        no new work queued, and no output that might end (EOG, last allowed token, a full
        context, stop strings the text must be checked for, a cancelled client)."""
        outputs, added, meta = plan
        if (not outputs or len(added) != len(outputs) or self.queue or self._engine_jobs
                or self._system_pending is not None or self._closing or self.ga_n > 1):
            return None
        is_eog = self.is_eog
        for (slot, _), tok, m in zip(outputs, tokens, meta):
            task = slot.task
            if (m is None or task is None or task.cancelled or tok < 0 or is_eog[tok] or m[1] <= 0
                    or m[0] + 2 > slot.n_ctx or slot.text.stops):
                return None
        batch = self.batch
        batch.clear()
        nxt_out, nxt_added, nxt_meta = [], [], []
        for (slot, _), tok, (pos, n_left) in zip(outputs, tokens, meta):
            nxt_out.append((slot, batch.add(tok, pos + 1, slot.id, True)))
            nxt_added.append((slot, [tok]))
            nxt_meta.append((pos + 1, n_left - 1))
        return nxt_out, nxt_added, nxt_meta

    def _fail_batch(self, plan, exc: LlamacyError) -> None:
        for slot, _ in plan[1]:
            if slot.task is not None:
                slot.task.push(exc)
                self._finish(slot, notify=False)
            self.ctx.seq_rm(slot.id, -1, -1)
            slot.cache_tokens = []

    def _publish(self, plan, tokens: list[int], probs: list, dt: float) -> None:
        outputs, added, _ = plan
        now = time.perf_counter()
        stats = self.stats
        n_prompt = 0
        for slot, toks in added:
            slot.cache_tokens.extend(toks)
            if slot.state == SlotState.PROMPT:
                n_prompt += len(toks)
                slot.n_prompt_evaluated += len(toks)
                if slot.n_past >= len(slot.prompt_tokens):
                    slot.t_prompt_done = now
                    slot.state = SlotState.GENERATING
                    if slot.n_predict == 0:
                        self._finish(slot)
        n_gen = len(outputs)
        if n_prompt:
            stats.n_prompt_tokens_processed_total += n_prompt
            stats.t_prompt_processing_total += dt * n_prompt / (n_prompt + n_gen)
        if n_gen:
            stats.n_tokens_predicted_total += n_gen
            stats.t_tokens_generation_total += dt * n_gen / (n_prompt + n_gen)
        pieces, is_eog = self.pieces, self.is_eog
        for (slot, _), tok, prob in zip(outputs, tokens, probs):
            if slot.task is None or slot.task.cancelled:
                continue
            if tok < 0:   # nothing allowed: a grammar that is complete while EOG is banned
                self._finish(slot, stopped_eos=True)
                continue
            slot.n_decoded += 1
            if is_eog[tok]:
                self._finish(slot, stopped_eos=True)
                continue
            slot.pending_token = tok
            piece = pieces[tok]
            new_text = slot.text.push(piece)
            if prob is not None:
                tp = TokenProbs(tok, piece, prob)
                slot.probs.append(tp)
                slot.probs_unsent.append(tp)
            if slot.text.stopping_word:
                self._finish(slot, stopped_word=True, last_text=new_text)
            elif 0 <= slot.n_predict <= slot.n_decoded:
                self._finish(slot, stopped_limit=True, last_text=new_text)
            elif slot.stream and (new_text or slot.probs_unsent):
                slot.task.push(Partial(new_text, slot.probs_unsent))
                slot.probs_unsent = []

    def _finish(self, slot: Slot, *, stopped_eos=False, stopped_limit=False, stopped_word=False,
                notify=True, last_text: str = "") -> None:
        task = slot.task
        if task is not None and notify:
            tail = last_text + slot.text.flush()
            if slot.stream and (tail or slot.probs_unsent):
                task.push(Partial(tail, slot.probs_unsent))
            now = time.perf_counter()
            t_prompt_done = slot.t_prompt_done or now
            prompt_ms = (t_prompt_done - slot.t_start) * 1e3
            gen_ms = (now - t_prompt_done) * 1e3
            n_prompt = slot.n_prompt_evaluated
            n_gen = slot.n_decoded
            timings = {
                "prompt_n": n_prompt, "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / n_prompt if n_prompt else 0.0,
                "prompt_per_second": 1e3 * n_prompt / prompt_ms if prompt_ms > 0 and n_prompt else 0.0,
                "predicted_n": n_gen, "predicted_ms": gen_ms,
                "predicted_per_token_ms": gen_ms / n_gen if n_gen else 0.0,
                "predicted_per_second": 1e3 * n_gen / gen_ms if gen_ms > 0 and n_gen else 0.0,
            }
            task.push(Final(
                content=slot.text.text, probs=slot.probs, id_slot=slot.id, stopped_eos=stopped_eos,
                stopped_limit=stopped_limit, stopped_word=stopped_word, stopping_word=slot.text.stopping_word,
                tokens_predicted=n_gen, tokens_evaluated=len(slot.prompt_tokens), tokens_cached=slot.n_past,
                truncated=slot.truncated, timings=timings))
        slot.release()
        self._wake.set()

    # --- embeddings ----------------------------------------------------------------------
    async def _embedding_step(self, loop) -> None:
        """Embed queued inputs together in one batch of the embedding context."""
        jobs: list[Task] = []
        budget = self.embed_batch.capacity
        n_seq = self.embed_ctx.n_seq_max
        while self.queue and self.queue[0].kind == "embedding" and len(jobs) < n_seq:
            n = len(self.queue[0].params.prompt_tokens)
            if n > budget and jobs:
                break
            task = self.queue.popleft()
            if not task.cancelled:
                jobs.append(task)
                budget -= n
        if not jobs:
            return
        try:
            results = await loop.run_in_executor(self._executor, self._embed, jobs)
        except LlamacyError as exc:
            results = [exc] * len(jobs)
        for task, res in zip(jobs, results):
            task.push(res)

    def _embed(self, jobs: list[Task]) -> list[EmbeddingResult]:
        """Engine thread: one decode for every job, each in its own sequence."""
        ctx, batch = self.embed_ctx, self.embed_batch
        batch.clear()
        per_token = ctx.pooling == "none"
        firsts = []
        for seq, task in enumerate(jobs):
            firsts.append(batch.n_tokens)
            for pos, tok in enumerate(task.params.prompt_tokens):
                batch.add(tok, pos, seq, True)
        ctx.memory_clear()
        ctx.decode(batch)
        out = []
        for seq, (task, first) in enumerate(zip(jobs, firsts)):
            n = len(task.params.prompt_tokens)
            if per_token:
                emb = [ctx.embeddings_ith(first + i).tolist() for i in range(n)]
            else:
                emb = ctx.embeddings_seq(seq).tolist()
            out.append(EmbeddingResult(emb, n))
        self.stats.n_prompt_tokens_processed_total += batch.n_tokens
        return out
