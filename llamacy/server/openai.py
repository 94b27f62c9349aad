"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/models."""
from __future__ import annotations

import time

from llamacy.api import openai as oai
from llamacy.api.fields import get_str
from llamacy.api.completion import timings_json
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.server.completion import CompletionHandler
from llamacy.serving.tasks import Final, Partial, Task


class _OpenAIHandler(CompletionHandler):
    """Shared flow: parse → submit → answer in OpenAI's shape (SSE ending in [DONE])."""

    id_prefix = "chatcmpl"

    async def post(self) -> None:
        st = self.state
        scheduler = st.require_ready()
        body = await self.off_loop(self.json_body)
        params = await self.off_loop(self.parse, body, st.add_bos)
        st.check_completion(params)
        model = get_str(body, "model", st.model_name)
        stream_options = body.get("stream_options") or {}
        include_usage = bool(stream_options.get("include_usage"))
        self.task = scheduler.submit(Task(params))
        rid = oai.new_id(self.id_prefix)
        pieces = st.model.vocab.pieces
        n_probs = params.sampling.n_probs
        if not params.stream:
            async for ev in self.task.events():
                if isinstance(ev, Final):
                    self.write_json(self.response(ev, id=rid, model=model, n_probs=n_probs, pieces=pieces))
            return
        self.start_sse()
        created = int(time.time())
        first = self.first_chunk(id=rid, model=model, created=created)
        if first is not None and not await self.send_sse(first):
            return self.cancel_task()
        try:
            async for ev in self.task.events():
                if isinstance(ev, Partial):
                    chunk = self.chunk(id=rid, model=model, created=created, text=ev.content, probs=ev.probs,
                                       n_probs=n_probs, pieces=pieces)
                else:
                    chunk = self.chunk(id=rid, model=model, created=created, text="", probs=[], n_probs=0,
                                       pieces=pieces, finish=oai.finish_reason(ev))
                    chunk["timings"] = timings_json(ev.timings)
                    if include_usage:
                        if not await self.send_sse(chunk):
                            return self.cancel_task()
                        chunk = {"id": rid, "object": chunk["object"], "created": created, "model": model,
                                 "choices": [], "usage": oai.usage(ev)}
                if not await self.send_sse(chunk):
                    return self.cancel_task()
        except LlamacyError as exc:
            await self.send_sse(exc.to_json())
        await self.send_sse(b"[DONE]")
        self.finish()


class ChatCompletionsHandler(_OpenAIHandler):
    id_prefix = "chatcmpl"

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return oai.parse_chat(body, st.model.vocab, st.chat_template, add_bos=add_bos,
                              grammar_from_schema=st.grammar_from_schema)

    def response(self, ev, **kw):
        return oai.chat_response(ev, **kw)

    def first_chunk(self, **kw):
        return oai.chat_chunk(delta={"role": "assistant", "content": ""}, **kw)

    def chunk(self, *, id, model, created, text, probs, n_probs, pieces, finish=None):
        delta = {"content": text} if finish is None else {}
        lp = oai.chat_logprobs(probs, pieces) if n_probs and probs else None
        return oai.chat_chunk(id=id, model=model, created=created, delta=delta, finish=finish, logprobs=lp)


class CompletionsHandler(_OpenAIHandler):
    id_prefix = "cmpl"

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return oai.parse_completions(body, st.model.vocab, add_bos=add_bos,
                                     grammar_from_schema=st.grammar_from_schema)

    def response(self, ev, **kw):
        return oai.completions_response(ev, **kw)

    def first_chunk(self, **kw):
        return None

    def chunk(self, *, id, model, created, text, probs, n_probs, pieces, finish=None):
        lp = oai.completion_logprobs(probs, pieces) if n_probs and probs else None
        return oai.completions_chunk(id=id, model=model, created=created, text=text, finish=finish, logprobs=lp)


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        st = self.state
        st.require_ready()
        m = st.model
        self.write_json(oai.models_list(st.model_name, n_ctx_train=m.n_ctx_train, n_vocab=m.n_vocab,
                                        n_params=m.n_params, size=m.size))


ROUTES = [
    (r"/v1/chat/completions", ChatCompletionsHandler),
    (r"/chat/completions", ChatCompletionsHandler),
    (r"/v1/completions", CompletionsHandler),
    (r"/v1/models", ModelsHandler),
    (r"/models", ModelsHandler),
]
