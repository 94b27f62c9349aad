"""The batch loop: admission, continuous batching, embeddings between steps, fault containment.

One coroutine on the IOLoop runs the loop. An iteration runs queued engine jobs (slot
save/restore), ends cancelled requests, admits queued completions into idle slots
(``admission``), runs at most one embedding batch (``embedding_queue``) and one generation
step: assemble a Batch (one token for every generating slot, then prompt chunks up to
n_batch), hand it to the one-thread engine executor (decode + sample every slot, GIL-released
C calls), then publish each slot's token as text and check stops. While a step is pure
generation and nothing waits, the engine thread goes straight on to the next step and the
IOLoop publishes behind it (``_continuation``). Everything that touches the context runs on
the engine thread or between steps, never beside a decode.

Faults stay in the step that met them: its requests end with an error, its slots' KV is
cleared, one traceback is logged, and the loop goes on. If steps keep failing, or the loop
itself fails, the scheduler is *broken*: every request in it ends with an error, new ones
are refused (503), and ``error`` says why (/health reports it).
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
from llamacy.engine.sampling import sample_batch
from llamacy.errors import InvalidRequestError, LlamacyError, NoKvSlotError, QueueFullError, UnavailableError
from llamacy.serving.admission import choose_slot, start_request
from llamacy.serving.embedding_queue import EmbeddingQueue
from llamacy.serving.faults import FaultInjector
from llamacy.serving.kv_positions import context_shift, self_extend
from llamacy.serving.slots import Slot, SlotSnapshot, SlotState
from llamacy.serving.tasks import CANCELLED, CompletionParams, Final, Partial, Task, Timings, TokenProbs

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3     # failed steps in a row after which the engine counts as unusable


@dataclass
class Stats:
    """Counters behind /metrics and /health."""

    n_prompt_tokens_processed_total: int = 0
    t_prompt_processing_total: float = 0.0      # seconds
    n_tokens_predicted_total: int = 0
    t_tokens_generation_total: float = 0.0      # seconds
    n_failed_steps_total: int = 0


@dataclass(slots=True)
class StepPlan:
    """One generation step: what the batch holds and what to do with its outputs."""

    outputs: list[tuple[Slot, int]]            # (slot, batch index) to sample
    added: list[tuple[Slot, list[int]]]        # tokens entering each slot's KV
    meta: list[tuple[int, int] | None]         # per output: (position, tokens allowed after it); None: a prompt's end


def _internal_error(exc: BaseException, where: str) -> LlamacyError:
    """What a request is told when a step fails for a reason that is not its own."""
    if isinstance(exc, LlamacyError):
        return exc
    return LlamacyError(f"internal error in {where}: {type(exc).__name__}: {exc}")


class Scheduler:
    """Owns the context's sequences and runs the decode loop."""

    def __init__(self, model: Model, ctx: Context, *, n_parallel: int, n_batch: int, n_predict: int = -1,
                 embed_ctx: Context | None = None, grp_attn_n: int = 1, grp_attn_w: int = 512,
                 max_queued: int = 1 << 30, faults: FaultInjector | None = None) -> None:
        self.model = model
        self.ctx = ctx
        self.vocab = model.vocab
        self.n_parallel = n_parallel
        self.n_batch = max(min(n_batch, ctx.n_batch), n_parallel)
        self.n_predict_default = n_predict
        self.max_queued = max_queued
        self.embeddings = EmbeddingQueue(embed_ctx) if embed_ctx is not None else None
        if grp_attn_n < 1 or (grp_attn_n > 1 and (grp_attn_w % grp_attn_n or grp_attn_w < grp_attn_n)):
            raise ValueError("--grp-attn-w must be a multiple of --grp-attn-n")
        self.ga_n, self.ga_w = grp_attn_n, grp_attn_w   # self-extend (group attention); 1 = off
        n_ctx_slot = ctx.n_ctx // n_parallel
        self.slots = [Slot(i, n_ctx_slot) for i in range(n_parallel)]
        self.queue: collections.deque[Task] = collections.deque()   # completions waiting for a slot
        self.batch = Batch(self.n_batch, 1)
        self.pieces = self.vocab.pieces
        self.is_eog = bytearray(self.vocab.n_vocab)
        for t in self.vocab.eog_tokens():
            self.is_eog[t] = 1
        self.stats = Stats()
        self.faults = faults
        self.error: str | None = None          # set when the engine is unusable
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llamacy-engine")
        self._wake = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._closing = False
        self._consecutive_failures = 0
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
        self._end_everything(UnavailableError("server is shutting down"))
        self._executor.shutdown(wait=True)

    def check_capacity(self) -> None:
        """Raise the error a new request would get now (shutting down, broken, queue full)."""
        if self._closing:
            raise UnavailableError("server is shutting down")
        if self.error is not None:
            raise UnavailableError(f"the engine is unusable: {self.error}")
        if self.n_deferred >= self.max_queued:
            raise QueueFullError(f"too many queued requests ({self.n_deferred}, --queue-max {self.max_queued}); "
                                 "retry later")

    def submit(self, task: Task, *, system_prompt: list[int] | None = None) -> Task:
        """Queue a validated task. ``system_prompt`` (tokens) replaces the shared system prompt
        first — only once the task is certain to be accepted, so a refused request changes nothing."""
        self.check_capacity()
        p = task.params
        if task.is_embedding:
            if self.embeddings is None:
                raise InvalidRequestError("embeddings are not enabled on this server")
            if system_prompt is not None:
                raise ValueError("an embedding task carries no system prompt")
        elif p.id_slot >= self.n_parallel:
            raise InvalidRequestError(f"id_slot {p.id_slot} out of range [0, {self.n_parallel})")
        if system_prompt is not None:
            self.set_system_prompt(system_prompt)
        if task.is_embedding:
            self.embeddings.add(task)
        else:
            self.queue.append(task)
        self._wake.set()
        return task

    def cancel(self, task: Task) -> None:
        """The client went away: end the task's stream (now, if it is still queued; at the next
        step boundary if it holds a slot or an embedding batch in flight) and free what it held."""
        if task.done:
            return
        task.cancelled = True
        if task in self.queue:
            self.queue.remove(task)
            task.push(CANCELLED)
        elif self.embeddings is not None and self.embeddings.cancel(task):
            pass
        self._wake.set()

    def set_system_prompt(self, tokens: list[int]) -> None:
        """Replace the system prompt. It is decoded once, when no slot is busy, into slot 0's
        sequence and copied into every other slot's; requests wait until then."""
        self.check_system_prompt(tokens)
        self._system_pending = list(tokens)
        self._wake.set()

    def check_system_prompt(self, tokens: list[int]) -> None:
        if len(tokens) >= self.n_ctx_slot - 4:
            raise InvalidRequestError(f"system prompt has {len(tokens)} tokens; the slot context is {self.n_ctx_slot}")

    @property
    def n_idle(self) -> int:
        return sum(not s.is_busy for s in self.slots)

    @property
    def n_processing(self) -> int:
        return self.n_parallel - self.n_idle

    @property
    def n_deferred(self) -> int:
        return len(self.queue) + (len(self.embeddings) if self.embeddings is not None else 0)

    def kv_tokens(self) -> int:
        return sum(s.n_past for s in self.slots)

    def slot_snapshots(self) -> list[SlotSnapshot]:
        return [s.snapshot() for s in self.slots]

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

    async def _in_engine(self, fn, *args):
        """Run ``fn`` on the engine thread between two steps of the loop, when the loop itself
        is not using the context (it calls seq_rm/seq_add on the IOLoop thread while admitting
        and shifting): so one thread at a time touches the context."""
        if self._closing or self._runner is None or self._runner.done():
            raise UnavailableError("server is shutting down" if self._closing else
                                   f"the engine is unusable: {self.error}")
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
        try:
            while not self._closing and self.error is None:
                self._wake.clear()    # cleared before the pass: a wake-up during it is not lost
                if not await self._iteration(loop):
                    await self._wake.wait()
        except Exception as exc:   # a bug outside any step: nothing can run any more
            log.exception("the decode loop failed")
            self._break(f"the decode loop failed: {type(exc).__name__}: {exc}")
        if self.error is not None:   # no step is in flight now: free everything
            self._end_everything(UnavailableError(f"the engine is unusable: {self.error}"))

    async def _iteration(self, loop) -> bool:
        """One pass of the loop; False when there was nothing to do (wait for a wake-up)."""
        await self._run_engine_jobs(loop)
        self._reap_cancelled()
        if self._system_pending is not None and not any(slot.is_busy for slot in self.slots):
            await self._apply_system_prompt(loop)
        if self._system_pending is None:   # new work waits for a pending system prompt
            self._admit()
        worked = False
        if self.embeddings is not None and self.embeddings.jobs:
            await self._embedding_step(loop)
            worked = True
        plan = self._assemble()
        if plan is not None:
            await self._generation_step(loop, plan)
            worked = True
        return worked or bool(self._engine_jobs)

    async def _generation_step(self, loop, plan: StepPlan) -> None:
        plan, tokens, probs, dt, exc = await loop.run_in_executor(self._executor, self._decode_and_sample, plan, loop)
        if exc is not None:
            self._step_failed(plan, exc)
        else:
            self._publish_safe(plan, tokens, probs, dt)

    def _step_failed(self, plan: StepPlan, exc: BaseException) -> None:
        """A step failed: its requests end with the error, its slots start afresh, the loop goes on."""
        log.error("generation step failed (%d slots)", len(plan.added), exc_info=exc)
        self.stats.n_failed_steps_total += 1
        err = _internal_error(exc, "the generation step")
        for slot, _ in plan.added:
            if slot.task is not None:
                slot.task.push(err)
            slot.kv_suspect = True
            self._finish(slot, notify=False)
        self._count_failure(err)

    def _count_failure(self, err: LlamacyError) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self._break(f"{self._consecutive_failures} steps failed in a row; last: {err.message}")

    def break_engine(self, reason: str) -> None:
        """A fatal engine error (the engine thread that hit it never returns, e.g. a lost RPC
        server): end every request now and refuse new ones, as after repeated failed steps."""
        self._break(reason)

    def _break(self, reason: str) -> None:
        """The engine is unusable: every request ends with an error now and new ones are
        refused; the loop stops after the step in flight and then frees the slots."""
        if self.error is None:
            log.critical("the engine is unusable: %s", reason)
        self.error = reason
        exc = UnavailableError(f"the engine is unusable: {reason}")
        for task in self.queue:
            task.push(exc)
        for slot in self.slots:
            if slot.task is not None:
                slot.task.push(exc)
                slot.task.cancelled = True   # stops a continuation on the engine thread
        if self.embeddings is not None:
            self.embeddings.fail_all(exc)
        self._wake.set()

    def _end_everything(self, exc: LlamacyError) -> None:
        for _, _, fut in self._engine_jobs:
            if not fut.done():
                fut.set_exception(exc)
        self._engine_jobs.clear()
        for task in self.queue:
            task.push(exc)
        self.queue.clear()
        if self.embeddings is not None:
            self.embeddings.fail_all(exc)
        for slot in self.slots:
            if slot.task is not None:
                slot.task.push(exc)
                slot.release()

    async def _apply_system_prompt(self, loop) -> None:
        tokens, self._system_pending = self._system_pending, None
        for slot in self.slots:
            slot.state = SlotState.RESERVED
        try:
            await loop.run_in_executor(self._executor, self._decode_system_prompt, tokens)
            self.system_tokens = tokens
            self.stats.n_prompt_tokens_processed_total += len(tokens)
        except Exception as exc:
            log.error("system prompt failed", exc_info=exc)
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
            self._decode(0, self.batch.n_tokens)
        for slot in self.slots[1:]:
            self.ctx.seq_cp(0, slot.id)

    def _reap_cancelled(self) -> None:
        for slot in self.slots:
            if slot.task is not None and slot.task.cancelled:
                log.info("slot %d: task %d cancelled by client", slot.id, slot.task.id)
                self._finish(slot, notify=False)

    def _admit(self) -> None:
        """Give queued completion tasks a slot (FIFO; a pinned task waits for its slot)."""
        if not self.queue:
            return
        waiting = collections.deque()
        for task in self.queue:
            slot = choose_slot(self.slots, task.params)
            if slot is None:
                waiting.append(task)
                continue
            try:
                start_request(slot, task, ctx=self.ctx, model=self.model, system_tokens=self.system_tokens,
                              n_predict_cap=self.n_predict_default, reuse_cache=self.ga_n == 1)
            except Exception as exc:
                if not isinstance(exc, LlamacyError):
                    log.error("starting task %d failed", task.id, exc_info=exc)
                slot.release()
                task.push(_internal_error(exc, "starting the request"))
        self.queue = waiting

    def _assemble(self) -> StepPlan | None:
        """Fill the batch: one token per generating slot, then prompt chunks up to n_batch."""
        batch = self.batch
        batch.clear()
        plan = StepPlan([], [], [])
        for slot in self.slots:
            if slot.state != SlotState.GENERATING:
                continue
            if slot.n_past + 1 > slot.n_ctx:
                if self.ga_n > 1:   # self-extend keeps every token: the context is simply full
                    slot.truncated = True
                    self._finish(slot, stopped_limit=True)
                    continue
                context_shift(self.ctx, slot)
            tok = slot.pending_token
            if self.ga_n > 1:
                pos = self_extend(self.ctx, slot, self.ga_n, self.ga_w)
                slot.n_past_se += 1
            else:
                pos = slot.n_past
            plan.outputs.append((slot, batch.add(tok, pos, slot.id, True)))
            plan.added.append((slot, [tok]))
            plan.meta.append((pos, slot.n_predict - slot.n_decoded - 1 if slot.n_predict >= 0 else 1 << 30))
        budget = self.n_batch - batch.n_tokens
        for slot in self.slots:
            if slot.state != SlotState.PROMPT or budget <= 0:
                continue
            start = slot.n_past
            chunk = slot.prompt_tokens[start:start + budget]
            pos0 = start
            if self.ga_n > 1:   # self-extend: never cross a window edge inside one batch
                pos0 = self_extend(self.ctx, slot, self.ga_n, self.ga_w)
                chunk = chunk[:slot.ga_i + self.ga_w - pos0]
                slot.n_past_se += len(chunk)
            last = start + len(chunk) == len(slot.prompt_tokens)
            want = last and slot.n_predict != 0
            idx = batch.add_sequence(chunk, pos0, slot.id, want)
            budget -= len(chunk)
            plan.added.append((slot, chunk))
            if want:
                plan.outputs.append((slot, idx))
                plan.meta.append(None)
        if batch.n_tokens == 0:
            # prompts fully cached with n_predict == 0 finish without a decode
            for slot in self.slots:
                if slot.state == SlotState.PROMPT and slot.n_past >= len(slot.prompt_tokens):
                    self._finish(slot)
            return None
        return plan

    # --- the engine thread's part of a step ----------------------------------------------
    def _decode(self, start: int, n_tokens: int) -> None:
        if self.faults is not None:
            self.faults.check("decode", n_tokens)
        self.ctx.decode(self.batch, start, n_tokens)

    def _decode_and_sample(self, plan: StepPlan, loop):
        """Engine thread: decode the batch, sample every output in one call; then, while the
        step was pure generation and nothing waits for the loop, decode the next step right
        away (handing this step's results to the IOLoop to publish meanwhile), so the engine
        never idles for the IOLoop's turnaround. Returns the last step and its results, or the
        step that failed and its exception."""
        while True:
            t0 = time.perf_counter()
            try:
                tokens, probs = self._decode_sample_once(plan)
            except Exception as exc:
                return plan, None, None, 0.0, exc
            dt = time.perf_counter() - t0
            following = self._continuation(plan, tokens)
            if following is None:
                return plan, tokens, probs, dt, None
            loop.call_soon_threadsafe(self._publish_safe, plan, tokens, probs, dt)
            plan = following

    def _decode_sample_once(self, plan: StepPlan):
        n = self.batch.n_tokens
        try:
            self._decode(0, n)
            return self._sample(plan.outputs, 0)
        except NoKvSlotError:
            if n == 1:
                raise
        # No KV room for the whole batch (the memory is as it was): decode it in smaller
        # pieces, halving until one fits, sampling each piece's outputs before the next.
        tokens: list[int] = [0] * len(plan.outputs)
        probs: list = [None] * len(plan.outputs)
        view, start = max(n // 2, 1), 0
        while start < n:
            m = min(view, n - start)
            try:
                self._decode(start, m)
            except NoKvSlotError:
                if m == 1:
                    raise
                view = max(m // 2, 1)
                continue
            picked = [k for k, (_, idx) in enumerate(plan.outputs) if start <= idx < start + m]
            t, p = self._sample([plan.outputs[k] for k in picked], start)
            for k, tok, pr in zip(picked, t, p):
                tokens[k], probs[k] = tok, pr
            start += m
        log.warning("no KV room for a batch of %d tokens: decoded in pieces of at most %d", n, view)
        return tokens, probs

    def _sample(self, outputs: list[tuple[Slot, int]], offset: int):
        probs = [slot.sampler.top_probs(self.ctx, idx - offset, slot.n_probs) if slot.n_probs > 0 else None
                 for slot, idx in outputs]
        tokens = sample_batch(self.ctx, [slot.sampler for slot, _ in outputs], [idx - offset for _, idx in outputs])
        return tokens, probs

    def _continuation(self, plan: StepPlan, tokens: list[int]) -> StepPlan | None:
        """Engine thread: the next generation step, when it can be decided without the IOLoop —
        no new work queued, and no output that might end (EOG, last allowed token, a full
        context, stop strings the text must be checked for, a cancelled client)."""
        if (not plan.outputs or len(plan.added) != len(plan.outputs) or self.queue or self._engine_jobs
                or (self.embeddings is not None and self.embeddings.jobs)
                or self._system_pending is not None or self._closing or self.ga_n > 1):
            return None
        is_eog = self.is_eog
        for (slot, _), tok, m in zip(plan.outputs, tokens, plan.meta):
            task = slot.task
            if (m is None or task is None or task.cancelled or tok < 0 or is_eog[tok] or m[1] <= 0
                    or m[0] + 2 > slot.n_ctx or slot.text.stops):
                return None
        batch = self.batch
        batch.clear()
        following = StepPlan([], [], [])
        for (slot, _), tok, (pos, n_left) in zip(plan.outputs, tokens, plan.meta):
            following.outputs.append((slot, batch.add(tok, pos + 1, slot.id, True)))
            following.added.append((slot, [tok]))
            following.meta.append((pos + 1, n_left - 1))
        return following

    # --- publishing a step's results (IOLoop) --------------------------------------------
    def _publish_safe(self, plan: StepPlan, tokens: list[int], probs: list, dt: float) -> None:
        """Publish a step; a failure ends that step's requests, not the loop. (During a
        continuation the engine thread may be decoding these slots' next step: so their KV is
        only marked for clearing here, and the slots are released at the next step boundary.)"""
        try:
            if self.faults is not None:
                self.faults.check("publish")
            self._publish(plan, tokens, probs, dt)
            self._consecutive_failures = 0
        except Exception as exc:
            log.error("publishing a step failed (%d slots)", len(plan.added), exc_info=exc)
            self.stats.n_failed_steps_total += 1
            err = _internal_error(exc, "publishing results")
            for slot, _ in plan.added:
                slot.kv_suspect = True
                if slot.task is not None:
                    slot.task.push(err)
                    slot.task.cancelled = True   # reaped (and its KV cleared) at the next boundary
            self._count_failure(err)
            self._wake.set()

    def _publish(self, plan: StepPlan, tokens: list[int], probs: list, dt: float) -> None:
        now = time.perf_counter()
        stats = self.stats
        n_prompt = 0
        for slot, toks in plan.added:
            slot.cache_tokens.extend(toks)
            if slot.state == SlotState.PROMPT:
                n_prompt += len(toks)
                slot.n_prompt_evaluated += len(toks)
                if slot.n_past >= len(slot.prompt_tokens):
                    slot.t_prompt_done = now
                    slot.state = SlotState.GENERATING
                    if slot.n_predict == 0:
                        self._finish(slot)
        n_gen = len(plan.outputs)
        if n_prompt:
            stats.n_prompt_tokens_processed_total += n_prompt
            stats.t_prompt_processing_total += dt * n_prompt / (n_prompt + n_gen)
        if n_gen:
            stats.n_tokens_predicted_total += n_gen
            stats.t_tokens_generation_total += dt * n_gen / (n_prompt + n_gen)
        pieces, is_eog = self.pieces, self.is_eog
        for (slot, _), tok, prob in zip(plan.outputs, tokens, probs):
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
        """End the slot's request (with its Final event, or CANCELLED when not ``notify``) and
        free the slot; a slot whose KV a failure may have spoilt starts afresh."""
        task = slot.task
        if task is not None and notify:
            tail = last_text + slot.text.flush()
            if slot.stream and (tail or slot.probs_unsent):
                task.push(Partial(tail, slot.probs_unsent))
            now = time.perf_counter()
            t_prompt_done = slot.t_prompt_done or now
            task.push(Final(
                content=slot.text.text, probs=slot.probs, id_slot=slot.id, stopped_eos=stopped_eos,
                stopped_limit=stopped_limit, stopped_word=stopped_word, stopping_word=slot.text.stopping_word,
                tokens_predicted=slot.n_decoded, tokens_evaluated=len(slot.prompt_tokens), tokens_cached=slot.n_past,
                truncated=slot.truncated,
                timings=Timings(n_prompt=slot.n_prompt_evaluated, prompt_ms=(t_prompt_done - slot.t_start) * 1e3,
                                n_predicted=slot.n_decoded, predicted_ms=(now - t_prompt_done) * 1e3)))
        elif task is not None:
            task.push(CANCELLED)
        if slot.kv_suspect:
            self.ctx.seq_rm(slot.id, -1, -1)
            slot.cache_tokens = []
            slot.kv_suspect = False
        slot.release()
        self._wake.set()

    # --- embeddings ----------------------------------------------------------------------
    async def _embedding_step(self, loop) -> None:
        """Embed the next batch of queued inputs (on the embedding context)."""
        queue = self.embeddings
        items = queue.take()
        if not items:
            return
        try:
            results = await loop.run_in_executor(self._executor, self._embed, items)
        except Exception as exc:
            log.error("embedding step failed (%d inputs)", len(items), exc_info=exc)
            self.stats.n_failed_steps_total += 1
            err = _internal_error(exc, "the embedding step")
            queue.fail(items, err)
            self._count_failure(err)
            return
        self._consecutive_failures = 0
        self.stats.n_prompt_tokens_processed_total += sum(r.n_tokens for r in results)
        queue.deliver(items, results)

    def _embed(self, items):
        if self.faults is not None:
            self.faults.check("embed")
        return self.embeddings.run(items)
