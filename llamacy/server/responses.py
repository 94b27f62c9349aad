"""OpenAI's Responses API: POST /v1/responses (answers and stream events) and
/v1/responses/input_tokens, run as chat requests (llamacy/api/responses.py converts)."""
from __future__ import annotations

from llamacy.api import responses
from llamacy.api.chat import ChatOutputParser
from llamacy.api.completion import RunningTimings, parse_response_options, progress_json, progress_timings_json
from llamacy.api.fields import get_str
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.server.completion import CompletionHandler
from llamacy.serving.tasks import Final, Partial, Progress


class ResponsesHandler(CompletionHandler):
    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        request = await self.off_loop(st.parse_chat, responses.chat_body(body))
        params = request.params
        options = parse_response_options(body)
        builder = responses.ResponseBuilder(model=get_str(body, "model", st.model_name))
        self.submit(params)
        output = ChatOutputParser(request.output)
        if not params.stream:
            async for ev in self.task.events():
                if isinstance(ev, Final):
                    self.write_json(builder.response(ev, output.parse(ev.content)))
            return
        self.start_sse()
        events = builder.start()
        running = RunningTimings(len(params.prompt_tokens))
        try:
            async for ev in self.task.events():
                if isinstance(ev, Partial):
                    events += builder.feed(output.feed(ev.content))
                    timings = running.add(ev)
                    if options.timings_per_token:      # llama.cpp's telemetry on each text delta
                        for name, data in events:
                            if name == "response.output_text.delta":
                                data["timings"] = timings
                elif isinstance(ev, Progress):         # return_progress
                    name, data = builder.progress()
                    data["prompt_progress"] = progress_json(ev)
                    if options.timings_per_token:
                        data["timings"] = progress_timings_json(ev)
                    events.append((name, data))
                elif isinstance(ev, Final):
                    events += builder.feed(output.finish())
                    events += builder.finish(ev, output.message())
                for name, data in events:
                    if not await self.send_sse(data, event=name):
                        return self.cancel_task()
                events = []
        except LlamacyError as exc:
            await self.send_sse({"type": "error", "code": exc.type, "message": exc.message}, event="error")
        self.finish()


class InputTokensHandler(BaseHandler):
    """POST /v1/responses/input_tokens: the prompt's size, nothing generated."""

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        n = await self.off_loop(st.count_chat_tokens, responses.chat_body(body))
        self.write_json({"object": "response.input_tokens", "input_tokens": n})


ROUTES = [
    (r"/v1/responses", ResponsesHandler),
    (r"/responses", ResponsesHandler),
    (r"/v1/responses/input_tokens", InputTokensHandler),
    (r"/responses/input_tokens", InputTokensHandler),
]
