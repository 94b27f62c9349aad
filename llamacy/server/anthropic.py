"""Anthropic's Messages API: POST /v1/messages (answers and stream events) and
/v1/messages/count_tokens, run as chat requests (llamacy/api/anthropic.py converts)."""
from __future__ import annotations

from llamacy.api import anthropic
from llamacy.api.chat import ChatOutputParser
from llamacy.api.fields import get_str
from llamacy.api.openai import new_id
from llamacy.errors import LlamacyError
from llamacy.server.base import BaseHandler
from llamacy.server.completion import CompletionHandler
from llamacy.serving.tasks import Final, Partial


class MessagesHandler(CompletionHandler):
    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        chat = anthropic.chat_body(body)
        request = await self.off_loop(st.parse_chat, chat)
        params = request.params
        model = get_str(body, "model", st.model_name)
        self.submit(params)
        output = ChatOutputParser(request.output)
        if not params.stream:
            async for ev in self.task.events():
                if isinstance(ev, Final):
                    message = output.parse(ev.content)
                    self.write_json(anthropic.message_response(ev, message, id=new_id("msg", "_"), model=model))
            return
        stream = anthropic.MessageStream(model=model, n_prompt=len(params.prompt_tokens))
        self.start_sse()
        events = stream.start()
        try:
            async for ev in self.task.events():
                if isinstance(ev, Partial):
                    events += stream.feed(output.feed(ev.content))
                elif isinstance(ev, Final):
                    events += stream.feed(output.finish())
                    events += stream.finish(ev, output.message())
                for name, data in events:
                    if not await self.send_sse(data, event=name):
                        return self.cancel_task()
                events = []
        except LlamacyError as exc:
            await self.send_sse({"type": "error", "error": {"type": exc.type, "message": exc.message}}, event="error")
        self.finish()


class CountTokensHandler(BaseHandler):
    """POST /v1/messages/count_tokens: the prompt's size, nothing generated."""

    async def post(self) -> None:
        st = self.state
        st.require_ready()
        body = await self.off_loop(self.json_body)
        n = await self.off_loop(st.count_chat_tokens, anthropic.chat_body(body))
        self.write_json({"input_tokens": n})


ROUTES = [
    (r"/v1/messages", MessagesHandler),
    (r"/v1/messages/count_tokens", CountTokensHandler),
]
