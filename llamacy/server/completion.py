"""POST /completion (and /completions): parse → validate → submit → stream or answer.

A request is parsed and checked in full (limits, grammar, its ``system_prompt``) before it
changes anything; the system prompt it carries is applied by the scheduler together with
accepting the request, so a refused request leaves the server as it was.
"""
from __future__ import annotations

import logging

from llamacy.api.completion import effective_n_predict, final_json, parse_completion, partial_json
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.serving.tasks import CompletionParams, Final, Partial, Task

log = logging.getLogger(__name__)


class CompletionHandler(BaseHandler):
    task: Task | None = None

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return parse_completion(body, st.model.vocab, add_bos=add_bos, grammar_from_schema=st.grammar_from_schema,
                                sampling_defaults=st.sampling_defaults)

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        system = None
        if body.get("system_prompt") is not None:
            system = st.prepare_system_prompt(body["system_prompt"])
        add_bos = st.add_bos if system is None else not system.info.prompt
        params = await self.off_loop(self.parse, body, add_bos)
        self.submit(params, system_prompt=system.tokens if system else None)
        if system is not None:
            st.system_prompt = system.info
        await self.respond(params)

    def submit(self, params: CompletionParams, system_prompt: list[int] | None = None) -> Task:
        """Check the request in full (limits, grammar), apply the server's -n cap, queue the task."""
        st = self.state
        st.check_completion(params)
        params.n_predict = effective_n_predict(params.n_predict, st.config.n_predict)
        if st.config.verbose:   # -v: the tokenized prompt
            pieces = st.model.vocab.pieces
            log.debug("completion request: %d prompt tokens: %s, pieces: %s", len(params.prompt_tokens),
                      params.prompt_tokens, [pieces[t].decode("utf-8", "replace") for t in params.prompt_tokens])
        self.task = st.scheduler.submit(Task(params), system_prompt=system_prompt)
        return self.task

    async def respond(self, params) -> None:
        st = self.state
        pieces = st.model.vocab.pieces
        n_ctx = st.scheduler.n_ctx_slot
        if params.stream:
            self.start_sse()
            try:
                async for ev in self.task.events():
                    if isinstance(ev, Partial):
                        ok = await self.send_sse(partial_json(ev, pieces, self.task.id_slot))
                    else:
                        ok = await self.send_sse(final_json(ev, params, pieces, model=st.model_name, n_ctx=n_ctx,
                                                            stream=True))
                    if not ok:
                        self.cancel_task()
                        return
            except LlamacyError as exc:
                await self.send_sse(exc.to_json())
            self.finish()
            return
        async for ev in self.task.events():
            if isinstance(ev, Final):
                self.write_json(final_json(ev, params, pieces, model=st.model_name, n_ctx=n_ctx, stream=False))

    def cancel_task(self) -> None:
        if self.task is not None:
            self.state.scheduler.cancel(self.task)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.cancel_task()
