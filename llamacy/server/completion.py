"""POST /completion (and /completions): parse → submit → stream or answer."""
from __future__ import annotations

import logging

from llamacy.api.completion import final_json, parse_completion, partial_json
from llamacy.engine.sampling import validate_grammar
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.serving.tasks import Final, Partial, Task

log = logging.getLogger(__name__)


def grammar_from_schema(schema):
    from llamacy.api.json_schema import json_schema_to_grammar
    return json_schema_to_grammar(schema)


class CompletionHandler(BaseHandler):
    task: Task | None = None

    def parse(self, body: dict):
        st = self.state
        return parse_completion(body, st.model.vocab, add_bos=st.add_bos, grammar_from_schema=grammar_from_schema)

    async def post(self) -> None:
        scheduler = self.state.require_ready()
        body = self.json_body()
        if body.get("system_prompt") is not None:
            self.state.set_system_prompt(body["system_prompt"])
        params = self.parse(body)
        if params.sampling.grammar:
            validate_grammar(self.state.model, params.sampling.grammar)
        if self.state.config.verbose:
            log.debug("completion request: %d prompt tokens: %s", len(params.prompt_tokens), params.prompt_tokens)
        self.task = scheduler.submit(Task(params))
        await self.respond(params)

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
        if self.task is not None and not self.task.done:
            self.task.cancel()
            self.state.scheduler._wake.set()

    def on_connection_close(self) -> None:
        self.cancel_task()
