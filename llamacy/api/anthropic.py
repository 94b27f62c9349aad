"""Anthropic's Messages API (/v1/messages) on top of the chat layer: a request becomes an
OpenAI-style chat body (canonical messages, tools, sampling options) that ``openai.parse_chat``
runs as any chat request; a parsed answer (``ChatMessage``) becomes Anthropic's message, and
``ChatDelta``s become its stream events. Pure functions, no I/O."""
from __future__ import annotations

import json
from typing import Any

from llamacy.api.chat import ChatDelta, ChatMessage
from llamacy.api.fields import require_object
from llamacy.api.openai import function_tool, new_id
from llamacy.errors import InvalidRequestError
from llamacy.serving.tasks import Final

# Anthropic's options with the same meaning under the chat API's name
_SAME = ("max_tokens", "temperature", "top_p", "top_k", "stream", "seed", "id_slot", "cache_prompt", "n_probs",
         "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "grammar", "json_schema", "samplers",
         "return_progress", "timings_per_token")


def _image_url(source: Any, where: str) -> str:
    """An image block's ``source`` as the URL of an OpenAI ``image_url`` part (a data URL for
    base64 data; the images layer checks it and refuses remote URLs)."""
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("media_type"), str) and isinstance(source.get("data"), str):
        return f"data:{source['media_type']};base64,{source['data']}"
    if kind == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise InvalidRequestError(f"{where}.source must be {{\"type\": \"base64\", \"media_type\", \"data\"}} or "
                              f"{{\"type\": \"url\", \"url\"}}")


def _block_part(block: Any, where: str) -> dict:
    """A text or image block as an OpenAI content part (images are read by the chat layer's vision
    path: a model started with --mmproj takes them, any other answers 400)."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), where)}}
    if kind == "document":
        raise InvalidRequestError(f"{where}: document blocks are not supported")
    raise InvalidRequestError(f"{where} must be a text or image block")


def _joined(parts: list[dict]) -> str | list[dict]:
    """Parts as a message's content: the text when all are text, else the parts."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _content(content: Any, where: str) -> str | list[dict]:
    """A string, or a list of text and image blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or an array of content blocks")
    return _joined([_block_part(block, f"{where}[{i}]") for i, block in enumerate(content)])


def _messages(messages: Any) -> list[dict]:
    """Anthropic messages → canonical (OpenAI-style) messages: tool_use blocks become tool_calls,
    tool_result blocks become tool messages, thinking blocks become reasoning_content."""
    if not isinstance(messages, list):
        raise InvalidRequestError("'messages' must be an array")
    out: list[dict] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidRequestError(f"{where} must be an object with role 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequestError(f"{where}.content must be a string or an array of content blocks")
        text, thinking, calls = [], [], []
        for j, block in enumerate(content):
            w = f"{where}.content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result" and m["role"] == "user":
                if text:      # text before a tool result stays a user turn of its own
                    out.append({"role": "user", "content": _joined(text)})
                    text = []
                result = block.get("content", "")
                if not isinstance(block.get("tool_use_id"), str):
                    raise InvalidRequestError(f"{w}.tool_use_id must be a string")
                body = _content(result, f"{w}.content")
                if block.get("is_error") is True:
                    body = f"Error: {body}" if isinstance(body, str) else [{"type": "text", "text": "Error: "}, *body]
                out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": body})
            elif kind == "tool_use" and m["role"] == "assistant":
                if not isinstance(block.get("name"), str) or not isinstance(block.get("input", {}), dict):
                    raise InvalidRequestError(f"{w} must have a string 'name' and an object 'input'")
                calls.append({"id": block.get("id") if isinstance(block.get("id"), str) else f"toolu_{j}",
                              "type": "function", "function": {"name": block["name"],
                                                               "arguments": block.get("input", {})}})
            elif kind in ("thinking", "redacted_thinking") and m["role"] == "assistant":
                if isinstance(block.get("thinking"), str):
                    thinking.append(block["thinking"])
            else:
                text.append(_block_part(block, w))
        if m["role"] == "user":
            if text:
                out.append({"role": "user", "content": _joined(text)})
            continue
        if any(p["type"] != "text" for p in text):
            raise InvalidRequestError(f"{where}: an assistant turn holds text, thinking and tool_use blocks only")
        msg: dict = {"role": "assistant", "content": _joined(text)}
        if thinking:
            msg["reasoning_content"] = "".join(thinking)
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _tools(tools: Any) -> list[dict] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidRequestError(f"tools[{i}] must be an object with a string 'name'")
        out.append(function_tool(i, t["name"], t.get("description"), t.get("input_schema"), "input_schema"))
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequestError("'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"none\"} or "
                              "{\"type\": \"tool\", \"name\": ...}")


def chat_body(body: Any) -> dict:
    """An Anthropic Messages request as a chat/completions body."""
    body = require_object(body)
    if "messages" not in body:
        raise InvalidRequestError("'messages' is required")
    messages = _messages(body["messages"]) or [{"role": "user", "content": ""}]   # as llama-server: no turn → an empty one
    system = body.get("system")
    if system is not None:
        content = _content(system, "'system'")
        if not isinstance(content, str):
            raise InvalidRequestError("'system' holds text blocks only")
        messages.insert(0, {"role": "system", "content": content})
    out: dict = {k: body[k] for k in _SAME if k in body}
    out["messages"] = messages
    if body.get("stop_sequences") is not None:
        out["stop"] = body["stop_sequences"]
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and tools:
        out["tool_choice"] = choice
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
            raise InvalidRequestError("'thinking' must be {\"type\": \"enabled\" | \"disabled\", ...}")
        out["chat_template_kwargs"] = {"enable_thinking": thinking["type"] != "disabled"}
    return out


def stop_reason(ev: Final, message: ChatMessage) -> str:
    if message.tool_calls:
        return "tool_use"
    if ev.stopped_word:
        return "stop_sequence"
    return "max_tokens" if ev.stopped_limit else "end_turn"


def usage(ev: Final) -> dict:
    return {"input_tokens": ev.tokens_evaluated, "output_tokens": ev.tokens_predicted,
            "cache_read_input_tokens": ev.tokens_evaluated - ev.timings.n_prompt, "cache_creation_input_tokens": 0}


def _arguments(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def content_blocks(message: ChatMessage) -> list[dict]:
    blocks: list[dict] = []
    if message.reasoning_content:
        blocks.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.content or not message.tool_calls:
        blocks.append({"type": "text", "text": message.content or ""})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call.arguments)})
    return blocks


def message_response(ev: Final, message: ChatMessage, *, id: str, model: str) -> dict:
    return {"id": id, "type": "message", "role": "assistant", "model": model, "content": content_blocks(message),
            "stop_reason": stop_reason(ev, message), "stop_sequence": ev.stopping_word or None, "usage": usage(ev)}


class MessageStream:
    """Anthropic's stream events for one answer: message_start, then for each content block
    (thinking, text, tool_use) content_block_start / _delta / _stop, then message_delta and
    message_stop. Events are ``(name, data)`` pairs."""

    def __init__(self, *, model: str, n_prompt: int) -> None:
        self.id = new_id("msg", "_")
        self.model = model
        self.n_prompt = n_prompt
        self.index = -1
        self.open: str | None = None     # the type of the block in progress

    def start(self) -> list[tuple[str, dict]]:
        return [("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.n_prompt, "output_tokens": 0}}})]

    def _block(self, kind: str, block: dict) -> list[tuple[str, dict]]:
        out = self._close()
        self.index += 1
        self.open = kind
        return out + [("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block})]

    def _close(self) -> list[tuple[str, dict]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _delta(self, delta: dict) -> tuple[str, dict]:
        return "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}

    def feed(self, delta: ChatDelta) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if delta.reasoning:
            if self.open != "thinking":
                out += self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": delta.reasoning}))
        if delta.content:
            if self.open != "text":
                out += self._block("text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": delta.content}))
        for call in delta.tool_calls:
            out += self._block("tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            out.append(self._delta({"type": "input_json_delta", "partial_json": call.arguments}))
        return out

    def finish(self, ev: Final, message: ChatMessage) -> list[tuple[str, dict]]:
        out = []
        if self.index < 0:      # no output at all: one empty text block, as the non-streamed answer has
            out += self._block("text", {"type": "text", "text": ""})
        out += self._close()
        return out + [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason(ev, message),
                                         "stop_sequence": ev.stopping_word or None},
                               "usage": {"output_tokens": ev.tokens_predicted}}),
            ("message_stop", {"type": "message_stop"})]
