"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/models."""
from __future__ import annotations

import time

from llamacy.api import openai as oai
from llamacy.api.chat import ChatOutputParser
from llamacy.api.completion import (RunningTimings, final_json, parse_response_options, progress_json,
                                    progress_timings_json, timings_json)
from llamacy.api.fields import get_str
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.server.completion import CompletionHandler
from llamacy.serving.tasks import Final, Partial, Progress


class _OpenAIHandler(CompletionHandler):
    """Shared flow: parse → submit one task per choice (``n``) → answer in OpenAI's shape (SSE
    ending in [DONE]). Subclasses say how a request is parsed and how each choice's results
    become its part of the response, its chunks and its final chunks."""

    id_prefix = "chatcmpl"

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        params = await self.off_loop(self.parse, body, st.add_bos)
        options = parse_response_options(body, server_verbose=st.config.verbose)
        n = oai.parse_n(body)
        model = get_str(body, "model", st.model_name)
        include_usage = oai.include_usage(body)
        self.submit_all(oai.choice_params(params, n))
        self.start_choices(n)
        rid = oai.new_id(self.id_prefix)
        pieces = st.model.vocab.pieces
        n_probs = params.sampling.n_probs
        fmt = dict(id=rid, model=model, created=int(time.time()))
        if not params.stream:
            finals: list[Final] = [None] * n
            async for i, ev in self.all_events():
                if isinstance(ev, Final):
                    finals[i] = ev
            choices = [self.choice(i, ev, n_probs=n_probs, pieces=pieces) for i, ev in enumerate(finals)]
            out = self.response(finals, choices, id=rid, model=model)
            if options.verbose:
                out["__verbose"] = final_json(finals[0], params, pieces, model=model, n_ctx=st.scheduler.n_ctx_slot,
                                              stream=False)
            return self.write_json(out)
        self.start_sse()
        for i in range(n):
            first = self.first_chunk(index=i, **fmt)
            if first is not None and not await self.send_sse(first):
                return self.cancel_task()
        running = [RunningTimings(len(params.prompt_tokens)) for _ in range(n)]
        finals = []
        try:
            async for i, ev in self.all_events():
                if isinstance(ev, Partial):
                    chunks = self.chunks(i, ev.content, ev.probs if n_probs else [], pieces, **fmt)
                    if chunks and options.timings_per_token:
                        chunks[-1]["timings"] = running[i].add(ev)
                elif isinstance(ev, Progress):
                    chunks = [oai.chat_chunk(delta={"role": "assistant", "content": None}, index=i, **fmt)
                              if self.id_prefix == "chatcmpl" else
                              oai.completions_chunk(text="", index=i, **fmt)]
                    chunks[0]["prompt_progress"] = progress_json(ev)
                    if options.timings_per_token:
                        chunks[0]["timings"] = progress_timings_json(ev)
                else:
                    finals.append(ev)
                    chunks = self.final_chunks(i, ev, **fmt)
                    chunks[-1]["timings"] = timings_json(ev.timings)
                for chunk in chunks:
                    if not await self.send_sse(chunk):
                        return self.cancel_task()
            if include_usage and finals:
                await self.send_sse({"id": rid, "object": self.chunk_object, "created": fmt["created"],
                                     "model": model, "system_fingerprint": oai.SYSTEM_FINGERPRINT, "choices": [],
                                     "usage": oai.usage(finals), "timings": timings_json(finals[0].timings)})
        except LlamacyError as exc:
            await self.send_sse(exc.to_json())
        await self.send_sse(b"[DONE]")
        self.finish()

    def start_choices(self, n: int) -> None:
        """Per-choice state, before the first event."""


class ChatCompletionsHandler(_OpenAIHandler):
    """Chat: each choice's output is read by a ChatOutputParser (reasoning, text, tool calls)."""

    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def parse(self, body: dict, add_bos: bool):
        request = self.state.parse_chat(body, add_bos)
        self.output_spec = request.output
        return request.params

    def start_choices(self, n: int) -> None:
        self.outputs = [ChatOutputParser(self.output_spec) for _ in range(n)]
        self.n_calls_sent = [0] * n

    def choice(self, i: int, ev: Final, **kw) -> dict:
        return oai.chat_choice(i, ev, self.outputs[i].parse(ev.content), **kw)

    def response(self, finals, choices, **kw) -> dict:
        return oai.chat_response(finals, choices, **kw)

    def first_chunk(self, *, index: int, **kw) -> dict:
        return oai.chat_chunk(delta={"role": "assistant", "content": None}, index=index, **kw)

    def _delta(self, i: int, delta) -> dict:
        out = oai.chat_delta(delta, self.n_calls_sent[i])
        self.n_calls_sent[i] += len(delta.tool_calls)
        return out

    def chunks(self, i: int, text: str, probs, pieces, **kw) -> list[dict]:
        delta = self._delta(i, self.outputs[i].feed(text))
        lp = oai.chat_logprobs(probs, pieces) if probs else None
        return [oai.chat_chunk(delta=delta, logprobs=lp, index=i, **kw)] if delta or lp else []

    def final_chunks(self, i: int, ev: Final, **kw) -> list[dict]:
        delta = self._delta(i, self.outputs[i].finish())
        out = [oai.chat_chunk(delta=delta, index=i, **kw)] if delta else []
        reason = oai.chat_finish_reason(ev, self.outputs[i].message())
        return out + [oai.chat_chunk(delta={}, finish=reason, index=i, **kw)]


class CompletionsHandler(_OpenAIHandler):
    id_prefix = "cmpl"
    chunk_object = "text_completion"

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return oai.parse_completions(body, st.model.vocab, add_bos=add_bos,
                                     grammar_from_schema=st.grammar_from_schema,
                                     sampling_defaults=st.sampling_defaults)

    def choice(self, i: int, ev: Final, **kw) -> dict:
        return oai.completions_choice(i, ev, **kw)

    def response(self, finals, choices, **kw) -> dict:
        return oai.completions_response(finals, choices, **kw)

    def first_chunk(self, **kw) -> None:
        return None

    def chunks(self, i: int, text: str, probs, pieces, **kw) -> list[dict]:
        lp = oai.completion_logprobs(probs, pieces) if probs else None
        return [oai.completions_chunk(text=text, logprobs=lp, index=i, **kw)]

    def final_chunks(self, i: int, ev: Final, **kw) -> list[dict]:
        return [oai.completions_chunk(text="", finish=oai.finish_reason(ev), index=i, **kw)]


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        st = self.state
        st.require_ready()
        m = st.model
        self.write_json(oai.models_list(st.model_name, n_ctx_train=m.n_ctx_train, n_vocab=m.n_vocab,
                                        n_params=m.n_params, size=m.size, vision=st.vision is not None,
                                        aliases=st.aliases,
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
