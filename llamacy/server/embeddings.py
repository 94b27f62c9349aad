"""Embeddings: POST /embedding (native) and /v1/embeddings (OpenAI), with --embeddings.

A request is one task with all its inputs (at most --max-embedding-inputs); the scheduler
embeds them in batches between generation steps.
"""
from __future__ import annotations

import base64

import numpy as np

from llamacy.api.completion import tokenize_prompt
from llamacy.api.fields import get_str
from llamacy.api.images import tokenize_with_images
from llamacy.errors import InvalidRequestError, NotSupportedError
from llamacy.server.base import BaseHandler
from llamacy.serving.tasks import EmbeddingParams, EmbeddingResult, EmbeddingResults, Task


def normalized(vec) -> list:
    """L2-normalise one vector (llama.cpp's server returns unit-length embeddings)."""
    a = np.asarray(vec, dtype=np.float64)
    n = np.linalg.norm(a)
    return (a / n if n > 0 else a).tolist()


class _EmbeddingHandler(BaseHandler):
    task: Task | None = None

    def check_enabled(self):
        st = self.state
        sch = st.require_ready()
        if not st.config.embeddings:
            raise NotSupportedError("This server does not support embeddings. Start it with `--embeddings`")
        return sch

    def tokenize_inputs(self, inputs: list) -> list[list[int]]:
        st = self.state
        limit = st.config.max_embedding_inputs
        if len(inputs) > limit:
            raise InvalidRequestError(f"{len(inputs)} inputs in one request, more than the limit of {limit} "
                                      "(--max-embedding-inputs)")
        out = []
        n_max = st.embed_ctx.n_ubatch
        for i, item in enumerate(inputs):
            toks = tokenize_prompt(st.model.vocab, item, add_bos=True, field="input")
            if not toks:
                raise InvalidRequestError(f"input {i} is empty")
            if len(toks) > n_max:
                raise InvalidRequestError(f"input {i} has {len(toks)} tokens, more than the physical batch size "
                                          f"({n_max}); raise --ubatch-size")
            out.append(toks)
        return out

    async def embed(self, inputs: list) -> list[EmbeddingResult]:
        return await self.embed_tokens(await self.off_loop(self.tokenize_inputs, inputs))

    def tokenize_with_images(self, body: dict, content) -> tuple[list[int], object] | None:
        """``content`` with ``image_data`` ([img-N] markers): its tokens (image placeholders
        included) and images, within the same limits as text; None when ``image_data`` is empty."""
        st = self.state
        with_images = tokenize_with_images(st.vision, body, content, add_bos=True, field="content")
        if with_images is None:
            return None
        if st.embed_ctx.pooling == "none":
            raise InvalidRequestError("'image_data' needs pooled embeddings: it is not supported with --pooling none")
        tokens, media = with_images
        n_max = st.embed_ctx.n_ubatch
        if len(tokens) > n_max:
            raise InvalidRequestError(f"the content with its images has {len(tokens)} tokens, more than the physical "
                                      f"batch size ({n_max}); raise --ubatch-size")
        if media.end >= len(tokens):
            raise InvalidRequestError("the content ends with an image: put at least one text token after it")
        return tokens, media

    async def embed_tokens(self, token_lists: list[list[int]], media: list | None = None) -> list[EmbeddingResult]:
        """Run already tokenized inputs (each within the limits) as one request of the queue."""
        self.task = self.state.scheduler.submit(Task(EmbeddingParams(token_lists, media)))
        async for ev in self.task.events():
            if isinstance(ev, EmbeddingResults):
                return ev.items
        return []   # cancelled: the client is gone

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.task is not None:
            self.state.scheduler.cancel(self.task)


class EmbeddingHandler(_EmbeddingHandler):
    """``{"content": "..."}`` → ``{"embedding": [...]}`` (per-token vectors with --pooling none)."""

    async def post(self) -> None:
        self.check_enabled()
        body = await self.off_loop(self.json_body)
        content = body.get("content", body.get("input"))
        if content is None:
            raise InvalidRequestError("'content' is required")
        if body.get("image_data") is not None:
            with_images = await self.off_loop(self.tokenize_with_images, body, content)
            if with_images is not None:
                tokens, media = with_images
                results = await self.embed_tokens([tokens], [media])
                if results:
                    self.write_json({"embedding": self._vec(results[0])})
                return
        if isinstance(content, list) and content and all(isinstance(c, str) for c in content) and len(content) > 1:
            results = await self.embed(content)
            if results:
                self.write_json([{"index": i, "embedding": self._vec(r)} for i, r in enumerate(results)])
            return
        results = await self.embed([content])
        if results:
            self.write_json({"embedding": self._vec(results[0])})

    def _vec(self, res: EmbeddingResult):
        if self.state.embed_ctx.pooling == "none":
            return [normalized(v) for v in res.embedding]
        return normalized(res.embedding)


def content_parts_text(item, i: int):
    """One ``input`` item: a string or token array as given; today's ``{"content": [parts]}`` as
    the concatenation of its text parts (``"hello "`` + ``"world"`` embeds as ``"hello world"``)."""
    if not isinstance(item, dict):
        return item
    parts = item.get("content")
    if not isinstance(parts, list) or not parts:
        raise InvalidRequestError(f"input[{i}].content must be a non-empty array of content parts")
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise InvalidRequestError(f"input[{i}].content[{j}]: only text parts are accepted here, got "
                                      f"{str(kind)[:40]!r} (images go to /embedding with image_data)")
        if not isinstance(part.get("text"), str):
            raise InvalidRequestError(f"input[{i}].content[{j}].text must be a string")
        texts.append(part["text"])
    return "".join(texts)


class OpenAIEmbeddingsHandler(_EmbeddingHandler):
    async def post(self) -> None:
        st = self.state
        self.check_enabled()
        if st.embed_ctx.pooling == "none":
            raise InvalidRequestError("Pooling type 'none' is not OAI compatible. Please use a different pooling type")
        body = await self.off_loop(self.json_body)
        inp = body.get("input")
        if isinstance(inp, (str, dict)) or (isinstance(inp, list) and inp and all(isinstance(t, int) for t in inp)):
            inputs = [content_parts_text(inp, 0)]
        elif isinstance(inp, list) and inp and all(isinstance(x, (str, list, dict)) for x in inp):
            inputs = [content_parts_text(x, i) for i, x in enumerate(inp)]
        else:
            raise InvalidRequestError("'input' must be a string, an array of strings, or token arrays")
        fmt = get_str(body, "encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequestError("'encoding_format' must be float or base64")
        model = get_str(body, "model", st.model_name)
        results = await self.embed(inputs)
        if not results:
            return
        data = []
        for i, r in enumerate(results):
            vec = normalized(r.embedding)
            if fmt == "base64":
                vec = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        n = sum(r.n_tokens for r in results)
        self.write_json({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": n, "total_tokens": n}})


ROUTES = [
    (r"/embedding", EmbeddingHandler),
    (r"/embeddings", EmbeddingHandler),
    (r"/v1/embeddings", OpenAIEmbeddingsHandler),
]
