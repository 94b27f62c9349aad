"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/models."""
from __future__ import annotations

import time

from llamacy.api import openai as oai
from llamacy.api.chat import ChatOutputParser
from llamacy.api.fields import get_str
from llamacy.api.completion import timings_json
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.server.completion import CompletionHandler
from llamacy.serving.tasks import Final, Partial


class _OpenAIHandler(CompletionHandler):
    """Shared flow: parse → submit → answer in OpenAI's shape (SSE ending in [DONE]). Subclasses
    say how a request is parsed and how results become a response, chunks and final chunks."""

    id_prefix = "chatcmpl"

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        params = await self.off_loop(self.parse, body, st.add_bos)
        model = get_str(body, "model", st.model_name)
        stream_options = body.get("stream_options") or {}
        include_usage = bool(stream_options.get("include_usage"))
        self.submit(params)
        rid = oai.new_id(self.id_prefix)
        pieces = st.model.vocab.pieces
        n_probs = params.sampling.n_probs
        fmt = dict(id=rid, model=model, created=int(time.time()))
        if not params.stream:
            async for ev in self.task.events():
                if isinstance(ev, Final):
                    self.write_json(self.response(ev, id=rid, model=model, n_probs=n_probs, pieces=pieces))
            return
        self.start_sse()
        first = self.first_chunk(**fmt)
        if first is not None and not await self.send_sse(first):
            return self.cancel_task()
        try:
            async for ev in self.task.events():
                if isinstance(ev, Partial):
                    chunks = self.chunks(ev.content, ev.probs if n_probs else [], pieces, **fmt)
                else:
                    chunks = self.final_chunks(ev, **fmt)
                    chunks[-1]["timings"] = timings_json(ev.timings)
                    if include_usage:
                        chunks.append({"id": rid, "object": chunks[-1]["object"], "created": fmt["created"],
                                       "model": model, "choices": [], "usage": oai.usage(ev)})
                for chunk in chunks:
                    if not await self.send_sse(chunk):
                        return self.cancel_task()
        except LlamacyError as exc:
            await self.send_sse(exc.to_json())
        await self.send_sse(b"[DONE]")
        self.finish()


class ChatCompletionsHandler(_OpenAIHandler):
    """Chat: the output is read by a ChatOutputParser (reasoning, text, tool calls)."""

    id_prefix = "chatcmpl"

    def parse(self, body: dict, add_bos: bool):
        request = self.state.parse_chat(body, add_bos)
        self.output = ChatOutputParser(request.output)
        self.n_calls_sent = 0
        return request.params

    def response(self, ev: Final, **kw) -> dict:
        return oai.chat_response(ev, self.output.parse(ev.content), **kw)

    def first_chunk(self, **kw) -> dict:
        return oai.chat_chunk(delta={"role": "assistant", "content": ""}, **kw)

    def _delta(self, delta) -> dict:
        out = oai.chat_delta(delta, self.n_calls_sent)
        self.n_calls_sent += len(delta.tool_calls)
        return out

    def chunks(self, text: str, probs, pieces, **kw) -> list[dict]:
        delta = self._delta(self.output.feed(text))
        lp = oai.chat_logprobs(probs, pieces) if probs else None
        return [oai.chat_chunk(delta=delta, logprobs=lp, **kw)] if delta or lp else []

    def final_chunks(self, ev: Final, **kw) -> list[dict]:
        delta = self._delta(self.output.finish())
        out = [oai.chat_chunk(delta=delta, **kw)] if delta else []
        reason = oai.chat_finish_reason(ev, self.output.message())
        return out + [oai.chat_chunk(delta={}, finish=reason, **kw)]


class CompletionsHandler(_OpenAIHandler):
    id_prefix = "cmpl"

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return oai.parse_completions(body, st.model.vocab, add_bos=add_bos,
                                     grammar_from_schema=st.grammar_from_schema,
                                     sampling_defaults=st.sampling_defaults)

    def response(self, ev: Final, **kw) -> dict:
        return oai.completions_response(ev, **kw)

    def first_chunk(self, **kw) -> None:
        return None

    def chunks(self, text: str, probs, pieces, **kw) -> list[dict]:
        lp = oai.completion_logprobs(probs, pieces) if probs else None
        return [oai.completions_chunk(text=text, logprobs=lp, **kw)]

    def final_chunks(self, ev: Final, **kw) -> list[dict]:
        return [oai.completions_chunk(text="", finish=oai.finish_reason(ev), **kw)]


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        st = self.state
        st.require_ready()
        m = st.model
        self.write_json(oai.models_list(st.model_name, n_ctx_train=m.n_ctx_train, n_vocab=m.n_vocab,
                                        n_params=m.n_params, size=m.size, aliases=st.aliases,
                                        tags=list(st.config.tags)))


class ChatInputTokensHandler(BaseHandler):
    """POST /v1/chat/completions/input_tokens: the size of the prompt a chat request would run."""

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        self.write_json({"input_tokens": await self.off_loop(st.count_chat_tokens, body)})


class ApplyTemplateHandler(BaseHandler):
    """POST /apply-template: the prompt a chat request would be given, without generating."""

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        chat = await self.off_loop(oai.chat_prompt, body, st.chat_template, st.chat_defaults)
        self.write_json({"prompt": chat.prompt})


ROUTES = [
    (r"/v1/chat/completions", ChatCompletionsHandler),
    (r"/chat/completions", ChatCompletionsHandler),
    (r"/v1/chat/completions/input_tokens", ChatInputTokensHandler),
    (r"/chat/completions/input_tokens", ChatInputTokensHandler),
    (r"/v1/completions", CompletionsHandler),
    (r"/v1/models", ModelsHandler),
    (r"/models", ModelsHandler),
    (r"/apply-template", ApplyTemplateHandler),
]
