"""The embedding queue: embedding requests, packed into batches of the embedding context.

A request carries one or more inputs. Each step takes inputs from the head of the queue —
across requests — up to the context's batch size and sequence count, so a request with many
inputs is spread over several steps, and the scheduler runs a generation step between two
embedding steps: neither kind starves the other. Within a step each input is decoded on its
own, so its vector never depends on what shared the step (deterministic embeddings).
Embeddings have their own context (unified KV, pooling on): libllama pools multi-sequence
batches correctly only with a unified KV cache, while generation keeps a stream per slot.

An input with images (``--mmproj``) takes a step of its own: its text and images up to the
last image are evaluated first (serving/multimodal.py), then the text after it in the final
decode — whose tokens the pooled vector covers (they attend to the images before them).
"""
from __future__ import annotations

import collections

from llamacy.engine.context import Batch, Context
from llamacy.serving.multimodal import PrefillJob, decode_text, evaluate
from llamacy.serving.tasks import CANCELLED, EmbeddingParams, EmbeddingResult, EmbeddingResults, Task


class EmbeddingJob:
    __slots__ = ("task", "inputs", "media", "next_input", "results", "n_done")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.inputs: list[list[int]] = task.params.inputs
        self.media: list = task.params.media or [None] * len(self.inputs)
        self.next_input = 0                  # the first input not yet taken into a batch
        self.results: list[EmbeddingResult | None] = [None] * len(self.inputs)
        self.n_done = 0


class EmbeddingQueue:
    def __init__(self, ctx: Context, projector=None) -> None:
        self.ctx = ctx
        self.projector = projector
        self.batch = Batch(ctx.n_batch, 1)
        self.jobs: collections.deque[EmbeddingJob] = collections.deque()

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, task: Task) -> None:
        if not isinstance(task.params, EmbeddingParams) or not task.params.inputs:
            raise ValueError("an embedding task needs at least one input")
        self.jobs.append(EmbeddingJob(task))

    def cancel(self, task: Task) -> bool:
        """Drop a waiting request (its inputs in flight, if any, are discarded on delivery)."""
        for job in self.jobs:
            if job.task is task:
                self.jobs.remove(job)
                task.push(CANCELLED)
                return True
        return False

    def fail_all(self, exc: BaseException) -> None:
        for job in self.jobs:
            job.task.push(exc)
        self.jobs.clear()

    def take(self) -> list[tuple[EmbeddingJob, int]]:
        """The inputs of the next batch: (job, input index), FIFO, within the batch's token and
        sequence limits (an input never exceeds the batch: the API layer refuses longer ones)."""
        items: list[tuple[EmbeddingJob, int]] = []
        budget = self.batch.capacity
        n_seq = self.ctx.n_seq_max
        while self.jobs and len(items) < n_seq:
            job = self.jobs[0]
            if job.task.cancelled:
                self.jobs.popleft()
                job.task.push(CANCELLED)
                continue
            n = len(job.inputs[job.next_input])
            with_images = job.media[job.next_input] is not None
            if items and (n > budget or with_images):
                break
            items.append((job, job.next_input))
            budget -= n
            job.next_input += 1
            if job.next_input == len(job.inputs):
                self.jobs.popleft()
            if with_images:     # alone in its step
                break
        return items

    def run(self, items: list[tuple[EmbeddingJob, int]]) -> list[EmbeddingResult]:
        """Engine thread: one decode per input, each alone in the batch and the KV cache.

        An input's vector must not depend on what else is queued: decoded together, the
        inputs' rows and KV cells shift with the batch's composition, and the vectors with
        them (measured: up to 5e-3 in a unit vector, SmolLM2 with last pooling). Alone, the
        same tokens always run the same computation: bit-identical vectors in any request."""
        ctx, batch = self.ctx, self.batch
        if len(items) == 1 and items[0][0].media[items[0][1]] is not None:
            return [self._run_with_images(*items[0])]
        per_token = ctx.pooling == "none"
        out = []
        for job, i in items:
            tokens = job.inputs[i]
            batch.clear()
            for pos, tok in enumerate(tokens):
                batch.add(tok, pos, 0, True)
            ctx.memory_clear()
            ctx.decode(batch)
            if per_token:
                emb = [ctx.embeddings_ith(k).tolist() for k in range(len(tokens))]
            else:
                emb = ctx.embeddings_seq(0).tolist()
            out.append(EmbeddingResult(emb, len(tokens)))
        return out

    def _run_with_images(self, job: EmbeddingJob, i: int) -> EmbeddingResult:
        """Engine thread: one input with images, in sequence 0 (pooled: the API refuses --pooling none)."""
        ctx, tokens, media = self.ctx, job.inputs[i], job.media[i]
        ctx.memory_clear()
        prefill = evaluate(self.projector, ctx, self.batch, PrefillJob(0, tokens, media, 0, 0))
        decode_text(ctx, self.batch, tokens[prefill.n_past:], prefill.n_past, 0, outputs=True)
        return EmbeddingResult(ctx.embeddings_seq(0).tolist(), len(tokens))

    def deliver(self, items: list[tuple[EmbeddingJob, int]], results: list[EmbeddingResult]) -> None:
        """Hand each result to its request; a request whose inputs are all done ends."""
        for (job, i), res in zip(items, results):
            task = job.task
            if task.done:
                continue
            if task.cancelled:
                task.push(CANCELLED)
                continue
            job.results[i] = res
            job.n_done += 1
            if job.n_done == len(job.inputs):
                task.push(EmbeddingResults(job.results))

    def fail(self, items: list[tuple[EmbeddingJob, int]], exc: BaseException) -> None:
        """The batch failed: its requests end with ``exc`` (their other inputs are dropped)."""
        for job, _ in items:
            if not job.task.done:
                job.task.push(exc)
            if job in self.jobs:
                self.jobs.remove(job)
