"""The scheduler: admission, the generation loop, embeddings between steps, fault containment.

One coroutine on the IOLoop runs the loop. An iteration runs queued engine jobs (slot
save/restore), frees what ended, admits queued completions into idle slots (``admission``) and
hands them to the C generation loop (``engine/generation.pyx``), runs at most one embedding
batch (``embedding_queue``), then lets the generation loop run on the engine thread — with the
GIL released — until it runs out of work or is asked to pause because something needs the
IOLoop's attention (an engine job, an embedding batch, a system prompt, images to evaluate,
shutdown). A request that arrives while it runs joins it at its next step (``live_admission``:
the loop drops the slot's stale KV itself); only models whose memory cannot drop a sequence's
tail, and servers with a projector, pause it to admit. While it runs, each finished step wakes
the IOLoop through an eventfd, and ``publisher`` turns the step's token ids into slot updates,
text and events: the engine never waits for Python. Everything that touches the context runs
on the engine thread or between runs, never beside one.

Faults stay in the step that met them: its requests end with an error, its slots' KV is
cleared, one traceback is logged, and the loop goes on. If steps keep failing, or the loop
itself fails, the scheduler is *broken*: every request in it ends with an error, new ones
are refused (503), and ``error`` says why (/health reports it).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from llamacy.engine.context import Batch, Context
from llamacy.engine.device_sampling import DeviceSampling
from llamacy.engine.generation import (DEVICE_OFF_AT, DEVICE_ON_AT, RUN_ERROR, STABLE_OFF_AT, STABLE_ON_AT,
                                       STREAM_MAX, Generator)
from llamacy.engine.model import Model
from llamacy.engine.step_outputs import ROWS_PER_THREAD
from llamacy.errors import DecodeError, InvalidRequestError, LlamacyError, NoKvSlotError, QueueFullError, UnavailableError
from llamacy.serving.admission import COMPACT_REUSE_MIN, choose_slot, start_request
from llamacy.serving.embedding_queue import EmbeddingQueue
from llamacy.serving.faults import FaultInjector
from llamacy.serving.multimodal import MediaPrefill
from llamacy.serving.publisher import StepPublisher
from llamacy.serving.slot_ops import SlotOperations
from llamacy.serving.slots import Slot, SlotSnapshot, SlotState
from llamacy.serving.tasks import CANCELLED, Task

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
    n_prompt_tokens_cached_total: int = 0       # prompt tokens a request found in its slot's KV cache
    n_decode_total: int = 0                     # engine steps that decoded a batch
    n_busy_slots_total: int = 0                 # summed over those steps: slots with a request
    n_tokens_max: int = 0                       # longest sequence a request left in its slot


def _internal_error(exc: BaseException, where: str) -> LlamacyError:
    """What a request is told when a step fails for a reason that is not its own."""
    if isinstance(exc, LlamacyError):
        return exc
    return LlamacyError(f"internal error in {where}: {type(exc).__name__}: {exc}")


class Scheduler(SlotOperations):
    """Owns the context's sequences and runs the decode loop."""

    def __init__(self, model: Model, ctx: Context, *, n_parallel: int, n_batch: int, n_predict: int = -1,
                 embed_ctx: Context | None = None, grp_attn_n: int = 1, grp_attn_w: int = 512,
                 max_queued: int = 1 << 30, max_n_probs: int = 100, faults: FaultInjector | None = None,
                 projector=None, pad_gaps: bool = False, device_top_k: int = 0, device_auto: bool = False,
                 stable_on_at: float = STABLE_ON_AT, stable_off_at: float = STABLE_OFF_AT,
                 stream_max: int = STREAM_MAX,
                 device_on_at: float = DEVICE_ON_AT, device_off_at: float = DEVICE_OFF_AT,
                 rows_per_thread: int = ROWS_PER_THREAD,
                 compact_reuse_min: int = COMPACT_REUSE_MIN, gap_streamed: bool = True, warm_up: bool = False,
                 device_greedy_slots: int = 0, device_one_copy: bool = True) -> None:
        self.model = model
        self.ctx = ctx
        self.vocab = model.vocab
        self.n_parallel = n_parallel
        self.n_batch = max(min(n_batch, ctx.n_batch), n_parallel)
        self.n_predict_default = n_predict
        self.max_queued = max_queued
        self.embeddings = EmbeddingQueue(embed_ctx, projector) if embed_ctx is not None else None
        # admitted prompts with images: evaluated here, between runs of the C loop (text only)
        self.media = MediaPrefill(projector, ctx, self.n_batch) if projector is not None else None
        if grp_attn_n < 1 or (grp_attn_n > 1 and (grp_attn_w % grp_attn_n or grp_attn_w < grp_attn_n)):
            raise ValueError("--grp-attn-w must be a multiple of --grp-attn-n")
        self.ga_n = grp_attn_n   # self-extend (group attention); 1 = off
        # admitting while the C loop runs (it trims the KV itself): not for memories that can only
        # drop a whole sequence (Python trims theirs between runs), nor with images (prefilled here)
        self.live_admission = not model.has_recurrent_state and projector is None
        n_ctx_slot = ctx.n_ctx // n_parallel
        self.slots = [Slot(i, n_ctx_slot) for i in range(n_parallel)]
        self.queue: collections.deque[Task] = collections.deque()   # completions waiting for a slot
        self.batch = Batch(self.n_batch, 1)      # the system prompt's
        self.pieces = self.vocab.pieces
        self.is_eog = bytearray(self.vocab.n_vocab)
        for t in self.vocab.eog_tokens():
            self.is_eog[t] = 1
        self.stats = Stats()
        self.faults = faults
        self.error: str | None = None          # set when the engine is unusable
        self.t_publish_total = 0.0              # seconds the IOLoop spent publishing steps
        self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.pad_gaps = pad_gaps   # a GPU loop: idle gaps between busy slots cost tokens, keep them few
        self.compact_reuse_min = compact_reuse_min   # cached tokens that outweigh a gap (admission)
        # a gap whose cached prefix leaves a streamable prompt remainder beats the lowest idle slot (admission)
        self.gap_stream_max = stream_max if gap_streamed else 0
        # device_top_k > 0: each output's best candidates are selected on the device (see Generator);
        # device_auto: only while the steps have many outputs; device_greedy_slots > 0: greedy
        # requests touching at most that many tokens (bias, penalty window) get their argmax there;
        # device_one_copy: a step's results of each kind come back in one copy where they can
        self.device_sampling = (DeviceSampling(ctx, n_parallel, device_top_k, attach=not device_auto,
                                               greedy_slots=device_greedy_slots, one_copy=device_one_copy)
                                if device_top_k > 0 else None)
        self.gen = Generator(ctx, n_parallel, self.n_batch, self.pieces, self.vocab.eog_tokens(), ga_n=grp_attn_n,
                             ga_w=grp_attn_w, max_n_probs=max_n_probs, notify_fd=self._notify_fd, pad_gaps=pad_gaps,
                             device=self.device_sampling, device_auto=device_auto,
                             device_on_at=device_on_at, device_off_at=min(device_off_at, device_on_at),
                             stable_on_at=stable_on_at, stable_off_at=min(stable_off_at, stable_on_at),
                             stream_max=stream_max,
                             rows_per_thread=rows_per_thread)
        if warm_up:   # a GPU's kernels for each batch size load now, not in the first busy steps
            t0 = time.monotonic()
            try:
                n = self.gen.warm_up()
                log.info("warmed up: %d decodes of the loop's batch sizes in %.2f s", n, time.monotonic() - t0)
            except DecodeError as exc:    # the memory is empty again; requests will say what fails
                log.warning("warm-up stopped: %s", exc)
        if faults is not None:
            self.gen.set_fault_hook(self._decode_fault)
        self.publisher = StepPublisher(self.slots, self.pieces, self.is_eog, self.stats, self._slot_done)
        self._gen_running = False
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
        loop = asyncio.get_running_loop()
        loop.add_reader(self._notify_fd, self._on_steps)
        self._runner = loop.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        self.gen.pause()
        self._wake.set()
        if self._runner is not None:
            # Let the loop end after the step in flight: releasing slots first dropped their
            # samplers while the engine thread was still sampling with them.
            try:
                await self._runner
            except Exception:
                log.exception("decode loop failed while closing")
            asyncio.get_running_loop().remove_reader(self._notify_fd)
        self._end_everything(UnavailableError("server is shutting down"))
        self._executor.shutdown(wait=True)
        os.close(self._notify_fd)

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
        if self._gen_running and self.live_admission:
            self._admit()
        self._pause_if_needed()
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
        elif 0 <= task.id_slot < self.n_parallel and self.slots[task.id_slot].task is task:
            self.gen.cancel(task.id_slot)   # the loop ends it at its next step
        self._wake.set()

    def set_system_prompt(self, tokens: list[int]) -> None:
        """Replace the system prompt. It is decoded once, when no slot is busy, into slot 0's
        sequence and copied into every other slot's; requests wait until then."""
        self.check_system_prompt(tokens)
        self._system_pending = list(tokens)
        self._wake.set()
        self.gen.pause()

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
        self.gen.pause()
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
        self._release_ended()
        self._reap_cancelled()
        if self._system_pending is not None and not any(slot.is_busy for slot in self.slots):
            await self._apply_system_prompt(loop)
        self._admit()
        if self.media is not None and self.media.pending:
            await self._prefill_media(loop)
        worked = False
        if self.embeddings is not None and self.embeddings.jobs:
            await self._embedding_step(loop)
            worked = True
        if self.gen.has_work:
            await self._generate(loop)
            worked = True
        return worked or bool(self._engine_jobs)

    async def _generate(self, loop) -> None:
        """Let the C loop run until it pauses, runs dry or fails; its steps are published as they
        come (``_on_steps``), the last ones here."""
        self.gen.resume()
        self._pause_if_needed()
        self._gen_running = True
        try:
            status = await loop.run_in_executor(self._executor, self.gen.run)
        finally:
            self._gen_running = False
        self._drain()
        if status == RUN_ERROR:
            exc, seqs = self.gen.failed_step()
            self._fail_step("the generation step", seqs, exc)

    def loop_counters(self) -> dict:
        """Where the engine thread's time went (the C loop's counters: run() calls, steps,
        tokens, seconds in run, decode, sampling and waiting for the IOLoop) and the IOLoop's
        seconds publishing steps."""
        return {**self.gen.counters, "publish_seconds": self.t_publish_total}

    def _pause_if_needed(self) -> None:
        """Ask the running loop to stop after its step when the IOLoop has work it must do
        between runs: a request that can be admitted now (unless admitted while it runs), an
        embedding batch, an engine job, a system prompt, shutdown."""
        if ((self.queue and self.n_idle and not self.live_admission) or (self.embeddings is not None and self.embeddings.jobs)
                or self._engine_jobs or self._system_pending is not None or self._closing or self.error):
            self.gen.pause()

    def _on_steps(self) -> None:
        """The eventfd reader: the loop finished one or more steps."""
        try:
            os.eventfd_read(self._notify_fd)
        except BlockingIOError:
            pass
        self._drain()
        if self.queue and self.live_admission and self._gen_running:   # slots the loop has just let go of
            self._admit()

    def _drain(self) -> None:
        t0 = time.perf_counter()
        for seconds, n_prompt, n_generated, n_tokens, split_view, entries in self.gen.drain():
            if split_view:
                log.warning("no KV room for a batch of %d tokens: decoded in pieces of at most %d",
                            n_tokens, split_view)
            self._publish_safe(seconds, n_prompt, n_generated, entries)
        self.t_publish_total += time.perf_counter() - t0

    def _publish_safe(self, seconds: float, n_prompt: int, n_generated: int, entries: list) -> None:
        """Publish a step; a failure ends that step's requests, not the loop."""
        try:
            if self.faults is not None:
                self.faults.check("publish")
            self.publisher.apply(seconds, n_prompt, n_generated, entries)
            self._consecutive_failures = 0
        except Exception as exc:
            self._fail_step("publishing results", sorted({e[1] for e in entries}), exc)
            self._wake.set()

    def _slot_done(self, slot: Slot) -> None:
        """The publisher ended the slot's request: free the slot, and its sequence in the C loop
        (or, if the loop still steps it, stop it there and forget its KV: it holds a token more)."""
        seq = slot.id
        state = self.gen.state(seq)
        if state in ("prefill", "active"):
            if self._gen_running:
                self.gen.cancel(seq)
                slot.kv_suspect = True
            else:
                self.gen.release(seq, force=True)
        elif state == "done":
            self.gen.release(seq)
        if slot.kv_suspect and not self._gen_running:
            self._clear_kv(slot)
        slot.release()
        self._wake.set()
        self._pause_if_needed()

    def _clear_kv(self, slot: Slot) -> None:
        self.ctx.seq_rm(slot.id, -1, -1)
        slot.cache_tokens = []
        slot.kv_suspect = False

    def _release_ended(self) -> None:
        """Between runs: forget the loop's sequences of idle slots — ended, or stopped by a cancel
        the loop paused before seeing — and clear spoilt KV."""
        for slot in self.slots:
            if slot.task is None:
                if self.gen.state(slot.id) != "free":
                    self.gen.release(slot.id, force=True)
                if slot.kv_suspect:
                    self._clear_kv(slot)

    def _decode_fault(self, n_tokens: int) -> int:
        """Test-only hook before every llama_decode of the C loop (engine thread, GIL held)."""
        try:
            self.faults.check("decode", n_tokens)
        except NoKvSlotError:
            return 1
        return 0

    def _fail_step(self, where: str, seqs: list[int], exc: BaseException) -> None:
        """A step failed: its requests end with the error, its slots start afresh (their KV is
        cleared once the loop is not running), the loop goes on."""
        log.error("%s failed (%d slots)", where, len(seqs), exc_info=exc)
        self.stats.n_failed_steps_total += 1
        err = _internal_error(exc, where)
        for seq in seqs:
            slot = self.slots[seq]
            if slot.task is not None:
                slot.task.push(err)
                slot.kv_suspect = True
                self.publisher.finish(slot, notify=False)
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
                slot.task.cancelled = True
                self.gen.cancel(slot.id)
        if self.embeddings is not None:
            self.embeddings.fail_all(exc)
        self.gen.pause()
        self._wake.set()

    def _end_everything(self, exc: LlamacyError) -> None:
        """No run is in flight: end every request with ``exc`` and free every slot."""
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
                self.publisher.finish(slot, notify=False)

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
            self.ctx.decode(self.batch)
        for slot in self.slots[1:]:
            self.ctx.seq_cp(0, slot.id)

    def _reap_cancelled(self) -> None:
        for slot in self.slots:
            if slot.task is not None and slot.task.cancelled:
                log.info("slot %d: task %d cancelled by client", slot.id, slot.task.id)
                self.publisher.finish(slot, notify=False)

    def _admit(self) -> None:
        """Give queued completion tasks a slot (FIFO; a pinned task waits for its slot) and hand
        them to the generation loop — between its runs, or (``live_admission``) while it runs."""
        if not self.queue or self._system_pending is not None:   # new work waits for a pending system prompt
            return
        live = self._gen_running
        if live and not self.live_admission:
            return
        usable = [self._slot_usable(slot) for slot in self.slots]
        waiting = collections.deque()
        for task in self.queue:
            slot = choose_slot(self.slots, task.params, usable, compact=self.pad_gaps,
                               reuse_min=self.compact_reuse_min, stream_max=self.gap_stream_max)
            if slot is None:
                waiting.append(task)
                continue
            if slot.kv_suspect and self.live_admission:   # the loop clears the KV (trims from 0)
                slot.cache_tokens = []
                slot.kv_suspect = False
            usable[slot.id] = False
            try:
                start_request(slot, task, ctx=self.ctx, model=self.model, system_tokens=self.system_tokens,
                              n_predict_cap=self.n_predict_default, reuse_cache=self.ga_n == 1,
                              trim_kv=not self.live_admission)
                if not slot.prompt_tokens:   # an empty prompt: nothing to evaluate, an empty result (as llama.cpp)
                    self.publisher.finish(slot)
                    continue
                if self.media is not None and self.media.needs(slot):
                    self.media.pending.append(slot)     # its images first (_prefill_media)
                    continue
                self._hand_to_loop(slot)
            except Exception as exc:
                if not isinstance(exc, LlamacyError):
                    log.error("starting task %d failed", task.id, exc_info=exc)
                slot.release()
                task.push(_internal_error(exc, "starting the request"))
        self.queue = waiting

    def _slot_usable(self, slot: Slot) -> bool:
        """Whether an idle slot can take a request now: only one whose sequence the loop has let
        go of (a cancelled one ends at its next step, or is released between runs)."""
        if slot.is_busy:
            return False
        state = self.gen.state(slot.id)
        if state in ("prefill", "active"):
            return False
        if state == "done":
            self.gen.release(slot.id)
        return True

    def _hand_to_loop(self, slot: Slot) -> None:
        """The C loop takes the slot's prompt from its cached prefix on, and generates."""
        self.gen.add(slot.id, slot.sampler, slot.prompt_tokens, slot.n_past, slot.n_ctx, slot.n_keep,
                     slot.n_predict, [s.encode("utf-8") for s in slot.task.params.stop], trim=self.live_admission)

    async def _prefill_media(self, loop) -> None:
        """Evaluate admitted prompts' images (and the text before them) into their slots on the
        engine thread (serving/multimodal.py), then hand each slot to the C loop for its text tail."""
        slots, self.media.pending = self.media.pending, []
        for slot in slots:
            if slot.task is None:
                continue
            job = self.media.job(slot)
            try:
                await loop.run_in_executor(self._executor, self.media.run, job)
                self.media.done(slot, job, self.stats)
                if slot.task.cancelled:     # the client left while its images were evaluated
                    self.publisher.finish(slot, notify=False)
                else:
                    self._hand_to_loop(slot)
            except Exception as exc:
                self._fail_step("evaluating the prompt's images", [slot.id], exc)
            else:
                self._consecutive_failures = 0

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
        self.stats.n_decode_total += 1
        queue.deliver(items, results)

    def _embed(self, items):
        if self.faults is not None:
            self.faults.check("embed")
        return self.embeddings.run(items)
