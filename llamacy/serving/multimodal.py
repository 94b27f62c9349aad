"""Prompts with images: how they sit in a slot's token lists, and how their images get into the KV.

libmtmd cuts a prompt with images into chunks (``engine.multimodal.PromptChunks``): text
chunks of token ids, and image chunks that take ``n_pos`` positions of the sequence each. A
slot's ``prompt_tokens``/``cache_tokens`` hold one id per position, so for an image we write
a run of *placeholder ids* — negative numbers derived from the SHA-256 of the image's bytes,
one per position — and the prompt cache's common-prefix logic then reuses a prefix holding
"the same image at the same place" without ever comparing pixels. Placeholders never reach
the C generation loop's decoder or a sampler: the scheduler evaluates every image (and the
text between images) itself, on the engine thread, from the cached prefix up to the end of the
last image (``evaluate``), and the C loop starts after it, on text only.

Models whose image chunks take a different number of positions than embeddings (M-RoPE, e.g.
Qwen2-VL) are refused: positions and token ids would no longer correspond one to one.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from llamacy.engine.context import Batch, Context
from llamacy.errors import InvalidRequestError

PLACEHOLDER_SPAN = (1 << 31) - 2      # placeholders are -1 … -(2^31 - 1): never a token id


def image_id(data: bytes) -> str:
    """What names an image in chunks and placeholders: the SHA-256 of its bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def placeholders(id_hex: str, n: int) -> list[int]:
    """The ids of an image's ``n`` positions: distinct, negative, determined by the image."""
    base = int(id_hex[:15], 16)
    return [-1 - (base + i) % PLACEHOLDER_SPAN for i in range(n)]


@dataclass(frozen=True)
class ImageSpan:
    start: int      # index of the image's first position in the prompt's tokens
    n_pos: int
    chunk: int      # its chunk in MediaPrompt.chunks

    @property
    def end(self) -> int:
        return self.start + self.n_pos


@dataclass
class MediaPrompt:
    """The images of a tokenized prompt: libmtmd's chunks and where each image sits."""

    chunks: object                      # engine.multimodal.PromptChunks (kept alive until evaluated)
    spans: list[ImageSpan] = field(default_factory=list)

    @property
    def end(self) -> int:
        """The position after the last image (relative to the prompt's first token)."""
        return self.spans[-1].end if self.spans else 0

    @property
    def n_image_tokens(self) -> int:
        return sum(s.n_pos for s in self.spans)

    def shifted(self, n: int) -> "MediaPrompt":
        """The same images in a prompt that has ``n`` more tokens before them."""
        return MediaPrompt(self.chunks, [ImageSpan(s.start + n, s.n_pos, s.chunk) for s in self.spans])

    def safe_prefix(self, n: int, offset: int = 0) -> int:
        """``n`` cached positions, cut back to the start of an image it would end inside (an
        image's KV is reused whole or not at all); ``offset``: the prompt's first position."""
        for s in self.spans:
            if offset + s.start < n < offset + s.end:
                return offset + s.start
        return n


def tokenize(projector, text: str, images: list, *, add_special: bool) -> tuple[list[int], MediaPrompt]:
    """``text`` (holding ``projector.marker`` once per image) and decoded images → the prompt's
    token ids with placeholders, and its MediaPrompt. ValueError when libmtmd refuses it."""
    chunks = projector.tokenize(text, images, add_special=add_special, parse_special=True)
    tokens: list[int] = []
    spans: list[ImageSpan] = []
    for i in range(len(chunks)):
        kind = chunks.kind(i)
        if kind == "text":
            tokens.extend(chunks.tokens(i))
            continue
        if kind != "image":
            raise ValueError(f"a {kind} chunk: only images are supported")
        n_pos, n_tokens = chunks.n_pos(i), chunks.n_tokens(i)
        if n_pos != n_tokens:
            raise InvalidRequestError("this model places images with M-RoPE (an image takes other positions than "
                                      "embeddings), which llamacy does not support")
        spans.append(ImageSpan(len(tokens), n_pos, i))
        tokens.extend(placeholders(chunks.id(i), n_pos))
    return tokens, MediaPrompt(chunks, spans)


def check_fits(tokens: list[int], media: MediaPrompt, n_ctx: int) -> None:
    """A prompt with images is never truncated (it would cut an image): it must fit the slot, with
    at least one text token after its last image (the generation loop starts there)."""
    if len(tokens) >= n_ctx:
        raise InvalidRequestError(f"the prompt with its images takes {len(tokens)} positions: it does not fit the "
                                  f"slot's context ({n_ctx}), and prompts with images are not truncated")
    if media.end >= len(tokens):
        raise InvalidRequestError("the prompt ends with an image: put at least one text token after the last image")


@dataclass
class PrefillJob:
    """One slot's images to evaluate (built on the IOLoop, run on the engine thread)."""

    seq: int
    tokens: list[int]          # the slot's whole prompt (placeholders included)
    media: MediaPrompt
    offset: int                # the prompt's position of the request's first token (after a system prompt)
    n_cached: int              # positions already in the KV
    n_past: int = 0            # after run(): positions in the KV (the end of the last image)
    seconds: float = 0.0

    @property
    def end(self) -> int:
        return self.offset + self.media.end


def evaluate(projector, ctx: Context, batch: Batch, job: PrefillJob) -> PrefillJob:
    """Engine thread: decode the text and evaluate the images of ``job.tokens`` from
    ``job.n_cached`` up to the end of its last image, into sequence ``job.seq``."""
    t0 = time.perf_counter()
    pos = job.n_cached
    for span in job.media.spans:
        start = job.offset + span.start
        if start + span.n_pos <= pos:       # in the cached prefix
            continue
        if start < pos:
            raise ValueError(f"the cached prefix ends inside an image ({pos} in [{start}, {start + span.n_pos}))")
        decode_text(ctx, batch, job.tokens[pos:start], pos, job.seq)
        pos = projector.eval_chunk(job.media.chunks, span.chunk, ctx, start, job.seq, batch.capacity)
    job.n_past = pos
    job.seconds = time.perf_counter() - t0
    return job


def decode_text(ctx: Context, batch: Batch, tokens: list[int], pos: int, seq: int, *, outputs: bool = False) -> None:
    """Decode ``tokens`` at positions from ``pos`` into ``seq``, in batches (outputs only with ``outputs``)."""
    for start in range(0, len(tokens), batch.capacity):
        part = tokens[start:start + batch.capacity]
        batch.clear()
        for k, tok in enumerate(part):
            batch.add(tok, pos + start + k, seq, outputs)
        ctx.decode(batch)


class MediaPrefill:
    """The scheduler's images in flight: slots admitted with images not yet in their KV."""

    def __init__(self, projector, ctx: Context, n_batch: int) -> None:
        self.projector = projector
        self.ctx = ctx
        self.batch = Batch(n_batch, 1)
        self.pending: list = []          # slots waiting for their images

    def needs(self, slot) -> bool:
        """Does the admitted ``slot`` hold images that are not in its KV yet?"""
        media = slot.task.params.media
        return media is not None and media.spans and slot.n_past < self.offset(slot) + media.end

    @staticmethod
    def offset(slot) -> int:
        return len(slot.prompt_tokens) - len(slot.task.params.prompt_tokens)

    def job(self, slot) -> PrefillJob:
        return PrefillJob(slot.id, slot.prompt_tokens, slot.task.params.media, self.offset(slot), slot.n_past)

    def run(self, job: PrefillJob) -> PrefillJob:
        """Engine thread."""
        return evaluate(self.projector, self.ctx, self.batch, job)

    @staticmethod
    def done(slot, job: PrefillJob, stats) -> None:
        """IOLoop: the slot's KV now holds its prompt up to the end of its last image."""
        slot.cache_tokens = list(job.tokens[:job.n_past])
        n = job.n_past - job.n_cached
        slot.n_prompt_evaluated += n
        stats.n_prompt_tokens_processed_total += n
        stats.t_prompt_processing_total += job.seconds
