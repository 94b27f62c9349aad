"""POST /completion (and /completions): parse → validate → submit → stream or answer.

A request is parsed and checked in full (limits, grammar, its ``system_prompt``) before it
changes anything; the system prompt it carries is applied by the scheduler together with
accepting the request, so a refused request leaves the server as it was.
"""
from __future__ import annotations

import asyncio
import logging

from llamacy.api.completion import (RunningTimings, effective_n_predict, final_json, parse_completion,
                                    parse_response_options, partial_json, progress_json, progress_timings_json,
                                    split_prompts)
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.serving.tasks import CompletionParams, Final, Partial, Progress, Task

log = logging.getLogger(__name__)


class CompletionHandler(BaseHandler):
    task: Task | None = None
    tasks: tuple[Task, ...] = ()     # every task of the request (several: n > 1 choices, several prompts)
    multi_prompt = True              # an array of prompts gives one result each (not /infill)

    def parse(self, body: dict, add_bos: bool):
        st = self.state
        return parse_completion(body, st.model.vocab, add_bos=add_bos, grammar_from_schema=st.grammar_from_schema,
                                sampling_defaults=st.sampling_defaults, vision=st.vision)

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        system = None
        if body.get("system_prompt") is not None:
            system = st.prepare_system_prompt(body["system_prompt"])
        add_bos = st.add_bos if system is None else not system.info.prompt
        prompts = split_prompts(body.get("prompt")) if self.multi_prompt else None
        bodies = [body] if prompts is None else [{**body, "prompt": p} for p in prompts]
        params = [await self.off_loop(self.parse, b, add_bos) for b in bodies]
        options = parse_response_options(body)
        self.submit_all(params, system_prompt=system.tokens if system else None)
        if system is not None:
            st.system_prompt = system.info
        await self.respond(params, options, several=prompts is not None)

    def submit(self, params: CompletionParams, system_prompt: list[int] | None = None) -> Task:
        """Check the request in full (limits, grammar), apply the server's -n cap, queue the task."""
        st = self.state
        st.check_completion(params)
        params.n_predict = effective_n_predict(params.n_predict, st.config.n_predict)
        if st.config.verbose:   # -v: the tokenized prompt
            pieces = st.model.vocab.pieces
            log.debug("completion request: %d prompt tokens: %s, pieces: %s", len(params.prompt_tokens),
                      params.prompt_tokens, [pieces[t].decode("utf-8", "replace") if t >= 0 else "<image>"
                                             for t in params.prompt_tokens])    # < 0: an image's position
        self.task = st.scheduler.submit(Task(params), system_prompt=system_prompt)
        self.tasks += (self.task,)
        return self.task

    def submit_all(self, requests: list[CompletionParams], system_prompt: list[int] | None = None) -> None:
        """Submit one task per choice or prompt (the first sets the system prompt, if given); if
        one is refused, the others are cancelled."""
        try:
            for i, params in enumerate(requests):
                self.submit(params, system_prompt=system_prompt if i == 0 else None)
        except BaseException:
            self.cancel_task()
            raise

    async def all_events(self):
        """``(choice index, event)`` of every task, as they come; each task's stream ends with its
        Final. An error in any of them is raised, and the other tasks are cancelled."""
        if len(self.tasks) == 1:
            async for ev in self.tasks[0].events():
                yield 0, ev
            return
        try:
            async for item in self._merged_events():
                yield item
        finally:
            self.cancel_task()      # a no-op for the tasks that finished

    async def _merged_events(self):
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, task: Task) -> None:
            try:
                async for ev in task.events():
                    queue.put_nowait((i, ev))
            except BaseException as exc:
                queue.put_nowait((i, exc))
            queue.put_nowait((i, None))

        pumps = [asyncio.ensure_future(pump(i, t)) for i, t in enumerate(self.tasks)]
        try:
            left = len(pumps)
            while left:
                i, ev = await queue.get()
                if ev is None:
                    left -= 1
                elif isinstance(ev, BaseException):
                    raise ev
                else:
                    yield i, ev
        finally:
            for p in pumps:
                p.cancel()

    async def respond(self, prompts: list[CompletionParams], options, *, several: bool = False) -> None:
        """One result per prompt: the spec's object for a single prompt; for several (today's
        multi-prompt form) a list, and streamed chunks that carry their prompt's ``index``."""
        st = self.state
        pieces = st.model.vocab.pieces
        n_ctx = st.scheduler.n_ctx_slot

        def final(i: int, ev: Final, stream: bool) -> dict:
            out = final_json(ev, prompts[i], pieces, model=st.model_name, n_ctx=n_ctx, stream=stream,
                             options=options)
            if several:
                out["index"] = i
            return out

        if not prompts[0].stream:
            finals: list = [None] * len(prompts)
            async for i, ev in self.all_events():
                if isinstance(ev, Final):
                    finals[i] = final(i, ev, False)
            self.write_json(finals if several else finals[0])
            return
        self.start_sse()
        running = [RunningTimings(len(p.prompt_tokens)) for p in prompts]
        try:
            async for i, ev in self.all_events():
                id_slot = self.tasks[i].id_slot
                if isinstance(ev, Partial):
                    chunk = partial_json(ev, pieces, id_slot, options)
                    timings = running[i].add(ev)
                    if options.timings_per_token:
                        chunk["timings"] = timings
                elif isinstance(ev, Progress):
                    chunk = {"content": "", "stop": False, "id_slot": id_slot, "prompt_progress": progress_json(ev)}
                    if options.timings_per_token:
                        chunk["timings"] = progress_timings_json(ev)
                else:
                    chunk = final(i, ev, True)
                if several:
                    chunk["index"] = i
                if not await self.send_sse(chunk):
                    self.cancel_task()
                    return
        except LlamacyError as exc:
            await self.send_sse(exc.to_json())
        self.finish()

    def cancel_task(self) -> None:
        for task in self.tasks:
            self.state.scheduler.cancel(task)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.cancel_task()
