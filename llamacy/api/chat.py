"""Chat, independent of any API flavour: messages (+ tools, thinking options) → the prompt, the
grammar the output must follow, and how to read the output back (text, reasoning, tool calls).

An API module (OpenAI's chat/completions today; Anthropic Messages or Responses later) turns its
own JSON into canonical messages and ``ChatOptions``, calls ``render_chat``, submits the prompt,
and feeds the generated text to a ``ChatOutputParser``, whose ``ChatDelta``s and final
``ChatMessage`` it formats in its own shape.

Canonical messages are OpenAI-style dicts: ``role``, ``content`` (text), and on assistant turns
``tool_calls`` (``[{"id", "type": "function", "function": {"name", "arguments"}}]``, arguments as
an object) and on tool turns ``tool_call_id``. Templates that cannot render tools, tool calls or
tool results get them as text instead (the GENERIC format of ``llamacy.api.tool_calls``);
which they can is found by rendering probe messages once per template.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from llamacy.api.chat_template import ChatTemplate
from llamacy.api.limits import DEFAULT_LIMITS
from llamacy.api.reasoning import (THINK_TAGS, ReasoningSpec, ReasoningSplitter, find_open_tag_at_end,
                                   reasoning_spec)
from llamacy.api.tool_calls import (ChatTools, ToolCall, ToolCallFormat, ToolCallParser, detect_tool_format,
                                    generic_tools_prompt, grammar_after_thoughts, tool_call_grammar)
from llamacy.errors import ChatTemplateError, InvalidRequestError

__all__ = ["ChatDelta", "ChatMessage", "ChatOptions", "ChatOutputParser", "ChatPrompt", "OutputSpec",
           "TemplateCaps", "render_chat", "template_caps"]


@dataclass(frozen=True)
class ChatOptions:
    """What a request asks of the chat beyond its messages."""

    tools: ChatTools | None = None
    reasoning_format: str = "deepseek"
    enable_thinking: bool = True
    template_kwargs: dict = field(default_factory=dict)
    max_schema_depth: int = DEFAULT_LIMITS.max_schema_depth   # tool parameter schemas
    add_generation_prompt: bool = True
    # continue the last (assistant) message instead of starting a new one: "auto", "content" or
    # "reasoning_content" (vLLM's and transformers' ``continue_final_message``); None: don't
    continue_final: str | None = None
    prefill_assistant: bool = True       # a trailing assistant message is continued (today's default)


@dataclass(frozen=True)
class OutputSpec:
    """How to read the generated text."""

    reasoning: ReasoningSpec = ReasoningSpec(enabled=False)
    tool_format: ToolCallFormat | None = None      # None: no tools, all text is content
    tool_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ChatPrompt:
    prompt: str
    grammar: str | None
    output: OutputSpec


@dataclass(frozen=True)
class TemplateCaps:
    """What a template renders by itself (found by rendering probe messages)."""

    system: bool
    tools: bool
    tool_calls: bool
    tool_responses: bool


_PROBE_USER = {"role": "user", "content": "llamacy-probe-user"}
_PROBE_CALL = {"role": "assistant", "content": "", "tool_calls": [{
    "id": "call_probe01", "type": "function",
    "function": {"name": "llamacy_probe_call", "arguments": {"probe": "llamacy-probe-argument"}}}]}
_PROBE_TOOL = {"type": "function", "function": {"name": "llamacy_probe_tool", "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}


def _renders(template: ChatTemplate, messages: list[dict], needle: str, **extra: Any) -> bool:
    try:
        return needle in template.render(messages, add_generation_prompt=False, **extra)
    except ChatTemplateError:
        return False


@functools.lru_cache(maxsize=32)
def _caps(source: str, bos_token: str, eos_token: str) -> TemplateCaps:
    t = ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)
    return TemplateCaps(
        system=_renders(t, [{"role": "system", "content": "llamacy-probe-system"}, _PROBE_USER],
                        "llamacy-probe-system"),
        tools=_renders(t, [_PROBE_USER], "llamacy_probe_tool", tools=[_PROBE_TOOL]),
        tool_calls=_renders(t, [_PROBE_USER, _PROBE_CALL], "llamacy_probe_call"),
        tool_responses=_renders(t, [_PROBE_USER, _PROBE_CALL, {"role": "tool", "tool_call_id": "call_probe01",
                                                                "content": "llamacy-probe-result"}],
                                "llamacy-probe-result"),
    )


def template_caps(template: ChatTemplate) -> TemplateCaps:
    return _caps(template.source, template.bos_token, template.eos_token)


# --- messages → template input ----------------------------------------------------------------

def _arguments_object(arguments: Any, where: str) -> dict:
    """Tool-call arguments as templates expect them: an object (OpenAI sends JSON text)."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{where} must be a JSON object (or its JSON text), got {str(arguments)[:60]!r}")
    return value


def _check_tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list):
        raise InvalidRequestError(f"{where} must be an array")
    out = []
    for j, call in enumerate(calls):
        w = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(
                f"{w} must be {{\"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}")
        args = _arguments_object(fn.get("arguments", {}), f"{w}.function.arguments")
        out.append({"id": call.get("id") if isinstance(call.get("id"), str) else f"call_{j}", "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def _as_generic_call_text(message: dict) -> str:
    calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"], "id": c["id"]}
             for c in message["tool_calls"]]
    text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return (message["content"] + "\n" + text) if message.get("content") else text


def _template_messages(messages: list[dict], caps: TemplateCaps, system_text: str) -> list[dict]:
    """Copies of ``messages`` that ``caps``'s template can render: tool calls and results it
    can't render become text, ``system_text`` (if any) joins the system prompt."""
    out: list[dict] = []
    names_by_id: dict[str, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object")
        m = dict(message)
        if m.get("role") == "developer":     # OpenAI's newer name for the system role
            m["role"] = "system"
        if m.get("tool_calls") is not None:
            m["tool_calls"] = _check_tool_calls(m["tool_calls"], f"messages[{i}].tool_calls")
            names_by_id.update((c["id"], c["function"]["name"]) for c in m["tool_calls"])
            if not m["tool_calls"]:
                del m["tool_calls"]
            elif not caps.tool_calls:
                m["content"] = _as_generic_call_text(m)
                del m["tool_calls"]
        if m.get("role") == "tool" and not caps.tool_responses:
            name = names_by_id.get(m.get("tool_call_id"), m.get("name"))
            m = {"role": "user", "content": json.dumps(
                {"tool_response": {"tool": name, "tool_call_id": m.get("tool_call_id"), "content": m.get("content")}},
                ensure_ascii=False)}
        out.append(m)
    if system_text:
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + system_text}
        elif caps.system:
            out.insert(0, {"role": "system", "content": system_text})
        elif out and isinstance(out[0].get("content"), str):
            out[0] = {**out[0], "content": system_text + "\n\n" + out[0]["content"]}
    return out


def render_chat(template: ChatTemplate, messages: list[dict], options: ChatOptions) -> ChatPrompt:
    """The prompt for ``messages``, the grammar its answer must follow (or None), and how to
    read the answer."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array")
    caps = template_caps(template)
    tools = options.tools
    fmt = detect_tool_format(template.source, caps.tools) if tools else None
    system_text = generic_tools_prompt(tools) if tools and fmt is ToolCallFormat.GENERIC else ""
    # templates test ``enable_thinking`` both ways (an undefined one reads as false)
    extra = {"enable_thinking": options.enable_thinking, **options.template_kwargs}
    if tools and fmt is not ToolCallFormat.GENERIC:
        extra["tools"] = [t.to_json() for t in tools.callable]
    rendered = _template_messages(messages, caps, system_text)     # validates every message first
    mode, add_generation_prompt = _continuation(messages, options)
    if mode is not None:      # the others, then the last one's text after the generation prompt
        rendered, final = rendered[:-1], messages[-1]
    prompt = template.render(rendered, add_generation_prompt=add_generation_prompt or mode is not None, **extra)
    grammar = tool_call_grammar(tools, fmt, options.max_schema_depth) if tools else None
    opened = find_open_tag_at_end(prompt) if add_generation_prompt or mode is not None else None
    if mode is not None:
        prompt, reasoning = _continue(prompt, final, mode, opened, options.reasoning_format, template.source)
    else:
        if opened and (not options.enable_thinking or (grammar and options.reasoning_format == "none")):
            # no thinking wanted, or thoughts that would be read as the answer: close the block
            prompt += opened[1] + "\n\n"
        elif opened and grammar:        # the model may think first; the grammar holds after the block
            grammar = grammar_after_thoughts(grammar, opened[1])
        reasoning = reasoning_spec(options.reasoning_format, prompt, template.source)
    return ChatPrompt(prompt=prompt, grammar=grammar,
                      output=OutputSpec(reasoning=reasoning, tool_format=fmt,
                                        tool_names=tools.names if tools else frozenset()))


# --- continuing the last message (assistant prefill, continue_final_message) ---------------------

def _continuation(messages: list[dict], options: ChatOptions) -> tuple[str | None, bool]:
    """(how the last message is continued — None: it is not —, add_generation_prompt), after
    today's llama-server rules: a trailing assistant message is a prefill unless the request says
    how to continue; continuing and a generation prompt exclude each other."""
    mode, add_generation_prompt = options.continue_final, options.add_generation_prompt
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if mode is None and options.prefill_assistant and last.get("role") == "assistant":
        before = messages[-2] if len(messages) >= 2 else None
        if isinstance(before, dict) and before.get("role") == "assistant":
            raise InvalidRequestError("Cannot have 2 or more assistant messages at the end of the list.")
        mode, add_generation_prompt = "auto", False
    if mode is None:
        return None, add_generation_prompt
    if add_generation_prompt:
        raise InvalidRequestError("Cannot set both add_generation_prompt and continue_final_message to true.")
    if last.get("role") != "assistant":
        raise InvalidRequestError("'continue_final_message' continues the last message, which must be the "
                                  "assistant's")
    if last.get("tool_calls"):
        raise InvalidRequestError("Cannot continue an assistant message that contains tool calls.")
    return mode, False


def _continuation_text(content: Any, where: str) -> str:
    """The text of a message being continued: text parts joined by a blank line (llama.cpp)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string, null or an array of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(f"{where}[{j}] must be {{\"type\": \"text\", \"text\": string}}")
        texts.append(part["text"])
    return "\n\n".join(texts)


def _continue(prompt: str, final: dict, mode: str, opened: tuple[str, str] | None, reasoning_format: str,
              template_source: str) -> tuple[str, ReasoningSpec]:
    """``prompt`` (ending with the generation prompt) extended by the last message's text; the
    output then continues the answer (``content``) or the thoughts (``reasoning_content``)."""
    content = _continuation_text(final.get("content"), "the last message's content")
    thoughts = final.get("reasoning_content") or ""
    if not isinstance(thoughts, str):
        raise InvalidRequestError("the last message's reasoning_content must be a string")
    if mode == "auto":
        mode = "reasoning_content" if thoughts and not content else "content"
    if mode == "reasoning_content":
        open_tag, close_tag = opened or next((p for p in THINK_TAGS if p[0] in template_source), THINK_TAGS[0])
        if opened is None:
            prompt += open_tag
        return prompt + thoughts, ReasoningSpec(enabled=reasoning_format != "none", open_tag=open_tag,
                                                close_tag=close_tag, starts_inside=True)
    if opened is not None:
        prompt += thoughts + opened[1]
    prompt += content
    return prompt, ReasoningSpec(enabled=False)


# --- output → text, reasoning, tool calls ------------------------------------------------------

@dataclass
class ChatDelta:
    """What one piece of output adds: text, reasoning text, completed tool calls."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)


@dataclass
class ChatMessage:
    """The whole answer: ``content`` is None when the answer is only tool calls."""

    content: str | None
    reasoning_content: str | None
    tool_calls: list[ToolCall]


class ChatOutputParser:
    """Reads output as it streams: reasoning first, then text and tool calls."""

    def __init__(self, spec: OutputSpec) -> None:
        self._reasoning = ReasoningSplitter(spec.reasoning)
        self._tools = ToolCallParser(spec.tool_format, spec.tool_names) if spec.tool_format else None
        self._content: list[str] = []
        self._thoughts: list[str] = []
        self._calls: list[ToolCall] = []

    def feed(self, text: str) -> ChatDelta:
        reasoning, content = self._reasoning.feed(text)
        return self._record(reasoning, content, final=False)

    def finish(self) -> ChatDelta:
        reasoning, content = self._reasoning.finish()
        return self._record(reasoning, content, final=True)

    def _record(self, reasoning: str, content: str, *, final: bool) -> ChatDelta:
        calls: list[ToolCall] = []
        if self._tools is not None:
            content, calls = self._tools.feed(content) if content else ("", [])
            if final:
                more, more_calls = self._tools.finish()
                content, calls = content + more, calls + more_calls
        self._thoughts.append(reasoning)
        self._content.append(content)
        self._calls += calls
        return ChatDelta(content=content, reasoning=reasoning, tool_calls=calls)

    def message(self) -> ChatMessage:
        content = "".join(self._content)
        if self._calls:
            content = content.strip() or None
        return ChatMessage(content=content, reasoning_content="".join(self._thoughts) or None,
                           tool_calls=list(self._calls))

    def parse(self, text: str) -> ChatMessage:
        """The whole output at once."""
        self.feed(text)
        self.finish()
        return self.message()
