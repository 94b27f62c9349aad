"""OpenAI's Responses API (/v1/responses) on top of the chat layer: a request becomes a
chat/completions body (``input`` items → canonical messages, ``instructions`` → the system
turn, function tools), run as any chat request; the parsed answer becomes the response's
``output`` items (reasoning, message, function calls), and ``ChatDelta``s its stream events.
Pure functions, no I/O."""
from __future__ import annotations

import time
from typing import Any

from llamacy.api.chat import ChatDelta, ChatMessage
from llamacy.api.completion import timings_json
from llamacy.api.fields import get_int, require_object
from llamacy.api.openai import function_tool, new_id
from llamacy.errors import InvalidRequestError
from llamacy.serving.tasks import Final

# Responses options passed to the chat request under the same name
_SAME = ("temperature", "top_p", "stream", "parallel_tool_calls", "seed", "top_k", "min_p", "n_probs",
         "cache_prompt", "id_slot", "return_progress", "timings_per_token", "repeat_penalty", "presence_penalty",
         "frequency_penalty")


def _parts_text(content: Any, where: str, kinds: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or an array of content parts")
    out = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in kinds and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind in ("input_image", "input_file", "input_audio"):
            raise InvalidRequestError(f"{where}[{i}]: {kind} is not supported: this server runs no multimodal "
                                      "projector")
        else:
            raise InvalidRequestError(f"{where}[{i}] must be one of {', '.join(kinds)} with a string 'text'")
    return "".join(out)


def _messages(items: Any) -> list[dict]:
    """``input`` (a string, or message / function_call / function_call_output items) → canonical
    messages; consecutive assistant items merge into one turn."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequestError("'input' must be a string or an array of items")
    out: list[dict] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"{where} must be an object")
        kind = item.get("type", "message")
        last = out[-1] if out and out[-1]["role"] == "assistant" else None
        if kind == "message" and item.get("role") in ("user", "system", "developer"):
            out.append({"role": item["role"], "content": _parts_text(item.get("content"), f"{where}.content",
                                                                       ("input_text", "text"))})
        elif kind == "message" and item.get("role") == "assistant":
            text = _parts_text(item.get("content", ""), f"{where}.content", ("output_text", "input_text", "text"))
            if last is not None and not last.get("tool_calls"):
                last["content"] += text
            else:
                out.append({"role": "assistant", "content": text})
        elif kind == "function_call":
            if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
                raise InvalidRequestError(f"{where}: a function_call needs string call_id, name and arguments")
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if last is not None:
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequestError(f"{where}: a function_call_output needs a string call_id")
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _parts_text(item.get("output", ""), f"{where}.output", ("input_text", "text"))})
        elif kind == "reasoning":
            continue     # earlier reasoning is not replayed to the model
        else:
            raise InvalidRequestError(f"{where}: unsupported item type {str(kind)[:40]!r}")
    return out


def _tools(tools: Any) -> list[dict] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("name"), str):
            raise InvalidRequestError(f"tools[{i}] must be {{\"type\": \"function\", \"name\": ...}} "
                                      "(built-in tools are not available)")
        out.append(function_tool(i, t["name"], t.get("description"), t.get("parameters"), "parameters"))
    return out


def chat_body(body: Any) -> dict:
    """A Responses request as a chat/completions body."""
    body = require_object(body)
    if "input" not in body:
        raise InvalidRequestError("'input' is required")
    if body.get("previous_response_id") is not None:
        raise InvalidRequestError("'previous_response_id' is not supported: responses are not stored; send the "
                                  "whole conversation in 'input'")
    messages = _messages(body["input"])
    if body.get("instructions") is not None:
        if not isinstance(body["instructions"], str):
            raise InvalidRequestError("'instructions' must be a string")
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    out: dict = {k: body[k] for k in _SAME if k in body}
    out["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = get_int(body, "max_output_tokens", -1, lo=-1)
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        if choice is not None:
            out["tool_choice"] = choice
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": text["format"].get("schema", {})}}
    return out


def usage(ev: Final) -> dict:
    return {"input_tokens": ev.tokens_evaluated, "output_tokens": ev.tokens_predicted,
            "total_tokens": ev.tokens_evaluated + ev.tokens_predicted,
            "input_tokens_details": {"cached_tokens": ev.tokens_evaluated - ev.timings.n_prompt},
            "output_tokens_details": {"reasoning_tokens": 0}}


class ResponseBuilder:
    """One response's ids, its output items and its stream events (``(name, data)`` pairs)."""

    def __init__(self, *, model: str) -> None:
        self.id = new_id("resp", "_")
        self.message_id = new_id("msg", "_")
        self.reasoning_id = new_id("rs", "_")
        self.model = model
        self.created = int(time.time())
        self.seq = 0
        self.output_index = -1
        self.open: str | None = None          # "reasoning" | "message" while one is streaming
        self.text = ""
        self.reasoning = ""

    def envelope(self, status: str, output: list | None = None, usage_json: dict | None = None) -> dict:
        out = {"id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
               "output": output or [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
               "error": None, "incomplete_details": None}
        if usage_json is not None:
            out["usage"] = usage_json
        return out

    def _event(self, name: str, **data) -> tuple[str, dict]:
        self.seq += 1
        return name, {"type": name, "sequence_number": self.seq, **data}

    def start(self) -> list[tuple[str, dict]]:
        return [self._event("response.created", response=self.envelope("in_progress")),
                self._event("response.in_progress", response=self.envelope("in_progress"))]

    def progress(self) -> tuple[str, dict]:
        return self._event("response.in_progress", response=self.envelope("in_progress"))

    # --- output items -------------------------------------------------------------------
    def _reasoning_item(self, status: str) -> dict:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": [], "status": status,
                "content": [{"type": "reasoning_text", "text": self.reasoning}] if status == "completed" else []}

    def _text_part(self) -> dict:
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def _message_item(self, status: str) -> dict:
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status,
                "content": [self._text_part()] if status == "completed" else []}

    @staticmethod
    def _call_item(call, status: str) -> dict:
        return {"id": f"fc_{call.id}", "type": "function_call", "status": status, "call_id": call.id,
                "name": call.name, "arguments": call.arguments if status == "completed" else ""}

    def output(self, message: ChatMessage) -> list[dict]:
        self.text, self.reasoning = message.content or "", message.reasoning_content or ""
        items = []
        if self.reasoning:
            items.append(self._reasoning_item("completed"))
        if self.text or not message.tool_calls:
            items.append(self._message_item("completed"))
        items += [self._call_item(c, "completed") for c in message.tool_calls]
        return items

    def response(self, ev: Final, message: ChatMessage) -> dict:
        out = self.envelope("completed", self.output(message), usage(ev))
        out["completed_at"] = int(time.time())
        return out

    # --- stream events ------------------------------------------------------------------
    def _close(self) -> list[tuple[str, dict]]:
        kind, self.open = self.open, None
        if kind == "reasoning":
            return [self._event("response.reasoning_text.done", item_id=self.reasoning_id,
                                output_index=self.output_index, content_index=0, text=self.reasoning),
                    self._event("response.output_item.done", output_index=self.output_index,
                                item=self._reasoning_item("completed"))]
        if kind == "message":
            return [self._event("response.output_text.done", item_id=self.message_id, output_index=self.output_index,
                                content_index=0, text=self.text, logprobs=[]),
                    self._event("response.content_part.done", item_id=self.message_id,
                                output_index=self.output_index, content_index=0, part=self._text_part()),
                    self._event("response.output_item.done", output_index=self.output_index,
                                item=self._message_item("completed"))]
        return []

    def _open(self, kind: str) -> list[tuple[str, dict]]:
        out = self._close()
        self.output_index += 1
        self.open = kind
        if kind == "reasoning":
            return out + [self._event("response.output_item.added", output_index=self.output_index,
                                      item=self._reasoning_item("in_progress"))]
        return out + [self._event("response.output_item.added", output_index=self.output_index,
                                  item=self._message_item("in_progress")),
                      self._event("response.content_part.added", item_id=self.message_id,
                                  output_index=self.output_index, content_index=0,
                                  part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    def feed(self, delta: ChatDelta) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if delta.reasoning:
            if self.open != "reasoning":
                out += self._open("reasoning")
            self.reasoning += delta.reasoning
            out.append(self._event("response.reasoning_text.delta", item_id=self.reasoning_id,
                                   output_index=self.output_index, content_index=0, delta=delta.reasoning))
        if delta.content:
            if self.open != "message":
                out += self._open("message")
            self.text += delta.content
            out.append(self._event("response.output_text.delta", item_id=self.message_id,
                                   output_index=self.output_index, content_index=0, delta=delta.content, logprobs=[]))
        for call in delta.tool_calls:
            out += self._close()
            self.output_index += 1
            out += [self._event("response.output_item.added", output_index=self.output_index,
                                item=self._call_item(call, "in_progress")),
                    self._event("response.function_call_arguments.delta", item_id=f"fc_{call.id}",
                                output_index=self.output_index, delta=call.arguments),
                    self._event("response.function_call_arguments.done", item_id=f"fc_{call.id}",
                                output_index=self.output_index, arguments=call.arguments),
                    self._event("response.output_item.done", output_index=self.output_index,
                                item=self._call_item(call, "completed"))]
        return out

    def finish(self, ev: Final, message: ChatMessage) -> list[tuple[str, dict]]:
        out = []
        if self.output_index < 0 and not message.tool_calls:   # no text at all: an empty message item
            out += self._open("message")
        out += self._close()
        name, data = self._event("response.completed", response=self.response(ev, message))
        data["timings"] = timings_json(ev.timings)
        return out + [(name, data)]
