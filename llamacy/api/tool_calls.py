"""Tool calling, independent of any API flavour: the tools a request offers, the wire format a
model writes its calls in, a grammar that forces well-formed calls, and parsing the output back
into calls — all at once or incrementally while it streams. Pure: no I/O, no engine.

Formats (``ToolCallFormat``), chosen from the chat template:

- ``HERMES`` (Hermes 2 Pro, Qwen 2.5/3, ...): ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``,
  one block per call.
- ``LLAMA3`` (Llama 3.1+): the answer is a JSON object ``{"name": .., "parameters": {..}}``
  (optionally after ``<|python_tag|>``); several are separated by ``;`` or newlines.
- ``MISTRAL`` (Mistral Nemo/Small, ...): ``[TOOL_CALLS][{"name": .., "arguments": {..}}, ...]``.
- ``GENERIC``, for templates with no tool support of their own: the model is told (in the system
  prompt) to answer with one JSON object, ``{"tool_calls": [{"name": .., "arguments": {..}}]}``
  or ``{"response": "text"}``; a grammar always enforces that shape.

The parsers never let a partial opening marker (``<tool_call>``, ``[TOOL_CALLS]``, the start of
a JSON call) reach the content: text that could still become one is held back.
"""
from __future__ import annotations

import enum
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from llamacy.api.json_schema import compose_grammar
from llamacy.api.limits import DEFAULT_LIMITS
from llamacy.errors import InvalidRequestError

__all__ = ["ChatTools", "ToolCall", "ToolCallFormat", "ToolCallParser", "ToolSpec", "detect_tool_format",
           "generic_tools_prompt", "parse_tool_calls", "tool_call_grammar"]

MAX_TOOLS = 128
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ToolCallFormat(enum.Enum):
    GENERIC = "generic"
    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: ``parameters`` is its JSON Schema."""

    name: str
    description: str = ""
    parameters: Any = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __post_init__(self) -> None:
        if not _TOOL_NAME.fullmatch(self.name):
            raise InvalidRequestError(
                f"tool name {self.name[:80]!r} must be 1-64 letters, digits, '_' or '-'")

    def to_json(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ChatTools:
    """The tools of a request and how the model may use them: ``choice`` is ``auto`` (call or
    answer), ``required`` (call at least one) or ``function`` (call ``function`` exactly once)."""

    tools: tuple[ToolSpec, ...]
    choice: str = "auto"
    function: str | None = None
    parallel: bool = True

    def __post_init__(self) -> None:
        if not self.tools:
            raise InvalidRequestError("'tools' must hold at least one tool")
        if len(self.tools) > MAX_TOOLS:
            raise InvalidRequestError(f"'tools' has more than {MAX_TOOLS} tools")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise InvalidRequestError("tool names must be unique")
        if self.choice not in ("auto", "required", "function"):
            raise InvalidRequestError(f"unknown tool choice {self.choice!r}")
        if self.choice == "function" and self.function not in names:
            raise InvalidRequestError(f"'tool_choice' names the function {self.function!r}, which is not in 'tools'")

    @property
    def names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools)

    @property
    def forced(self) -> bool:
        """The output must be tool calls (and so is grammar-constrained)."""
        return self.choice in ("required", "function")

    @property
    def callable(self) -> tuple[ToolSpec, ...]:
        return tuple(t for t in self.tools if self.choice != "function" or t.name == self.function)

    @property
    def many(self) -> bool:
        return self.parallel and self.choice != "function"


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: ``arguments`` is JSON text (an object), as OpenAI sends it."""

    name: str
    arguments: str
    id: str


def detect_tool_format(template_source: str, renders_tools: bool) -> ToolCallFormat:
    """The format a template's model writes calls in; GENERIC when the template does not render
    ``tools`` itself or uses a format llamacy does not parse."""
    if not renders_tools:
        return ToolCallFormat.GENERIC
    if "<tool_call>" in template_source:
        return ToolCallFormat.HERMES
    if "[TOOL_CALLS]" in template_source:
        return ToolCallFormat.MISTRAL
    if "<|start_header_id|>" in template_source and ("ipython" in template_source or "parameters" in template_source):
        return ToolCallFormat.LLAMA3
    return ToolCallFormat.GENERIC


def new_call_id(fmt: ToolCallFormat) -> str:
    """A fresh call id; Mistral's templates insist on 9 letters and digits."""
    if fmt is ToolCallFormat.MISTRAL:
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return "call_" + secrets.token_hex(12)


# --- prompts and grammars ----------------------------------------------------------------------

def generic_tools_prompt(tools: ChatTools) -> str:
    """The system-prompt text that teaches a model without native tool support the GENERIC format."""
    listing = "\n".join(json.dumps(t.to_json()["function"], ensure_ascii=False) for t in tools.callable)
    calls = ('{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}, ...]}' if tools.many
             else '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}')
    if tools.forced:
        how = f"Call a tool: answer with exactly one JSON object, {calls}."
    else:
        how = (f"Answer with exactly one JSON object: {calls} to call tools, or "
               '{"response": "<your reply>"} to reply to the user.')
    return f"You can call these tools:\n{listing}\n\n{how}"


def _lit(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def tool_call_grammar(tools: ChatTools, fmt: ToolCallFormat, max_depth: int = DEFAULT_LIMITS.max_schema_depth
                      ) -> str | None:
    """A grammar for the output when it must be calls (``tools.forced``), or for every
    answer in the GENERIC format; None when the output is free text parsed afterwards.
    Each call's arguments are constrained to that tool's parameter schema."""
    if not tools.forced and fmt is not ToolCallFormat.GENERIC:
        return None
    args_key = "parameters" if fmt is ToolCallFormat.LLAMA3 else "arguments"
    schemas, alternatives = {}, []
    for i, tool in enumerate(tools.callable):
        rule = f"tool-{i}-args"
        params = tool.parameters
        if isinstance(params, dict) and "type" not in params and "$ref" not in params:
            params = {**params, "type": "object"}    # arguments are always an object
        schemas[rule] = params
        alternatives.append(_lit('{"name": "' + tool.name + '", "' + args_key + '": ') + f" {rule} " + _lit("}"))
    call = "tool-call"
    if fmt is ToolCallFormat.HERMES:
        block = _lit("<tool_call>\n") + f" {call} " + _lit("\n</tool_call>")
        body = f"{block} ( {_lit(chr(10))} {block} )*" if tools.many else block
    elif fmt is ToolCallFormat.MISTRAL:
        more = f" ( {_lit(', ')} {call} )*" if tools.many else ""
        body = _lit("[TOOL_CALLS][") + f" {call}{more} " + _lit("]")
    elif fmt is ToolCallFormat.LLAMA3:
        body = f"{call} ( {_lit('; ')} {call} )*" if tools.many else call
    else:
        more = f" ( {_lit(', ')} {call} )*" if tools.many else ""
        body = _lit('{"tool_calls": [') + f" {call}{more} " + _lit("]}")
        if not tools.forced:
            response = _lit('{"response": ')
            body = f"{body} | {response} string {_lit('}')}"
    return compose_grammar(body, schemas, primitives=("string",), rules={"tool-call": " | ".join(alternatives)},
                           field="tools[].function.parameters", max_depth=max_depth)


def _class_char(ch: str) -> str:
    """``ch`` inside a GBNF character class."""
    return "\\" + ch if ch in "\\]^-[" else ch


def grammar_after_thoughts(grammar: str, close_tag: str) -> str:
    """``grammar`` preceded by free thoughts up to ``close_tag`` (and whitespace): for a prompt
    that opened a reasoning block, so the model may think before the answer the grammar forces.
    The thoughts are any text in which ``close_tag`` does not occur."""
    avoid = [_lit(close_tag[:i]) + f" [^{_class_char(close_tag[i])}]" if i else f"[^{_class_char(close_tag[0])}]"
             for i in range(len(close_tag))]
    answer = grammar.replace("root ::=", "llamacy-answer ::=", 1)
    return (f"root ::= llamacy-thoughts {_lit(close_tag)} [ \\t\\n]* llamacy-answer\n"
            f"llamacy-thoughts ::= ( {' | '.join(avoid)} )*\n" + answer)


# --- parsing ---------------------------------------------------------------------------------

def _json_end(text: str, start: int) -> int:
    """Index just past the JSON object/array that opens at ``text[start]``, or -1 if it is
    not complete yet."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _clean(text: str) -> str:
    """``text`` with surrogates paired up, and any left alone replaced by U+FFFD: JSON's
    ``\\uXXXX`` escapes can spell lone surrogates, which are not valid UTF-8."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _call_from_json(obj: Any, names: frozenset[str], fmt: ToolCallFormat) -> ToolCall | None:
    """A ToolCall from ``{"name", "arguments"|"parameters"}`` (also wrapped in ``"function"``),
    or None when ``obj`` is not a call of a known tool."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = {**obj["function"], "id": obj.get("id")}
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    call_id = obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else new_call_id(fmt)
    return ToolCall(name=obj["name"], arguments=_clean(json.dumps(args, ensure_ascii=False)), id=_clean(call_id))


def _partial_suffix(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


_GENERIC_RESPONSE = re.compile(r'\s*\{\s*"response"\s*:\s*"')


def _decode_json_string(body: str) -> str:
    """A JSON string body as text; one the model got wrong (a bad escape) is kept as written."""
    try:
        return _clean(json.loads('"' + body + '"'))
    except ValueError:
        return _clean(body)


def _json_string_prefix(raw: str) -> tuple[str, int, bool]:
    """Decode the start of a JSON string body: (text, characters consumed, closed). Stops
    before an escape that has not fully arrived."""
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == '"':
            return _decode_json_string(raw[:i]), i + 1, True
        if ch == "\\":
            if i + 1 >= n:
                break
            if raw[i + 1] == "u":
                if i + 6 > n:
                    break
                if raw[i + 2:i + 4].lower() in ("d8", "d9", "da", "db"):   # a high surrogate: its pair next?
                    follow = raw[i + 6:i + 8]
                    if len(follow) < 2 and "\\u".startswith(follow):
                        break
                    if follow == "\\u":
                        if i + 12 > n:
                            break
                        i += 12
                        continue
                i += 6
                continue
            i += 2
            continue
        i += 1
    return _decode_json_string(raw[:i]), i, False


class ToolCallParser:
    """Incremental parser of one response: ``feed(text)`` and ``finish()`` return
    ``(content, calls)`` — the text that is surely not part of a call, and calls completed."""

    _MARKERS = {ToolCallFormat.HERMES: ("<tool_call>", "</tool_call>"), ToolCallFormat.MISTRAL: ("[TOOL_CALLS]", "")}

    def __init__(self, fmt: ToolCallFormat, names: frozenset[str]) -> None:
        self.fmt = fmt
        self.names = names
        self._buf = ""
        self._inside = False          # inside a call block / JSON value
        self._at_start = True         # nothing but whitespace seen yet
        self._after_call = False      # drop whitespace right after a call
        self._streaming_response = False   # GENERIC: inside {"response": "...
        self._response_done = False
        self.n_calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._buf += text
        if self.fmt in self._MARKERS:
            return self._marked(final=False)
        return self._json_answer(final=False)

    def finish(self) -> tuple[str, list[ToolCall]]:
        if self.fmt in self._MARKERS:
            return self._marked(final=True)
        return self._json_answer(final=True)

    def _content(self, text: str) -> str:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        return text

    # HERMES and MISTRAL: calls follow a marker anywhere in the text
    def _marked(self, *, final: bool) -> tuple[str, list[ToolCall]]:
        open_tag, close_tag = self._MARKERS[self.fmt]
        content, calls = "", []
        while True:
            buf = self._buf
            if not self._inside:
                at = buf.find(open_tag)
                if at < 0:
                    keep = 0 if final else _partial_suffix(buf, open_tag)
                    content += self._content(buf[:len(buf) - keep])
                    self._buf = buf[len(buf) - keep:]
                    return content, calls
                content += self._content(buf[:at])
                self._buf = buf[at + len(open_tag):]
                self._inside = True
                continue
            if close_tag:                       # HERMES: the block ends at its closing tag
                end = buf.find(close_tag)
                if end < 0 and not final:
                    return content, calls
                body, rest = (buf, "") if end < 0 else (buf[:end], buf[end + len(close_tag):])
                found = self._parse_value(body.strip())
            else:                               # MISTRAL: a JSON array (or object) follows
                stripped = buf.lstrip()
                if not stripped and not final:
                    return content, calls
                end = _json_end(stripped, 0) if stripped[:1] in ("[", "{") else len(stripped)
                if end < 0 and not final:
                    return content, calls
                end = (len(stripped) if end < 0 else end) + len(buf) - len(stripped)
                body, rest = buf[:end], buf[end:]
                found = self._parse_value(body.strip())
            self._inside = False
            self._buf = rest
            if found:
                calls += found
                self._after_call = True
            else:                               # not a call after all: it is text
                content += self._content(open_tag + body + (close_tag if close_tag and end >= 0 else ""))
            if final and not self._buf:
                return content, calls

    def _parse_value(self, body: str) -> list[ToolCall]:
        try:
            value = json.loads(body)
        except ValueError:
            return []
        items = value if isinstance(value, list) else [value]
        found = [_call_from_json(item, self.names, self.fmt) for item in items]
        if not found or any(c is None for c in found):
            return []
        self.n_calls += len(found)
        return found

    # LLAMA3 and GENERIC: the whole answer is JSON (a call, calls, or {"response": ...})
    def _json_answer(self, *, final: bool) -> tuple[str, list[ToolCall]]:
        if self._response_done:                 # after {"response": "..."}: nothing more counts
            self._buf = ""
            return "", []
        if not self._at_start and not self._inside and not self._streaming_response:
            content, self._buf = self._content(self._buf), ""
            return content, []
        if self._streaming_response:
            return self._response_text(final)
        content, calls = "", []
        while True:
            buf = self._buf
            stripped = buf.lstrip()
            if self.fmt is ToolCallFormat.LLAMA3:
                if stripped.startswith("<|python_tag|>"):
                    stripped = stripped[len("<|python_tag|>"):].lstrip()
                elif "<|python_tag|>".startswith(stripped) and stripped and not final:
                    return content, calls
                if self.n_calls and stripped.startswith(";"):
                    stripped = stripped[1:].lstrip()
            if not stripped:
                if final:
                    self._buf = ""
                return content, calls
            if stripped[0] != "{":
                self._at_start = False
                content += self._content(buf if not self.n_calls else stripped)
                self._buf = ""
                return content, calls
            if self.fmt is ToolCallFormat.GENERIC and not self.n_calls:
                m = _GENERIC_RESPONSE.match(stripped)
                if m:
                    self._streaming_response = True
                    self._buf = stripped[m.end():]
                    more, _ = self._response_text(final)
                    return content + more, calls
            self._inside = True
            end = _json_end(stripped, 0)
            if end < 0:
                if not final:
                    return content, calls
                end = len(stripped)
            body, self._buf = stripped[:end], stripped[end:]
            self._inside = False
            found = self._parse_answer(body)
            if found is None:                   # JSON that is no call: plain text after all
                self._at_start = False
                content += self._content(body + self._buf)
                self._buf = ""
                return content, calls
            calls += found
            self._after_call = True

    def _parse_answer(self, body: str) -> list[ToolCall] | None:
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if self.fmt is ToolCallFormat.GENERIC and isinstance(value, dict):
            if isinstance(value.get("tool_call"), dict):
                value = [value["tool_call"]]
            elif isinstance(value.get("tool_calls"), list):
                value = value["tool_calls"]
            else:
                return None
        items = value if isinstance(value, list) else [value]
        found = [_call_from_json(item, self.names, self.fmt) for item in items]
        if not found or any(c is None for c in found):
            return None
        self.n_calls += len(found)
        return found

    def _response_text(self, final: bool) -> tuple[str, list[ToolCall]]:
        text, used, closed = _json_string_prefix(self._buf)
        if closed:
            self._buf = ""                      # the closing '}' (and anything after) is dropped
            self._streaming_response = False
            self._at_start = False
            self._response_done = True
        else:
            self._buf = self._buf[used:]
            if final:
                self._buf = ""
        return text, []


def parse_tool_calls(fmt: ToolCallFormat, names: frozenset[str], text: str) -> tuple[str, list[ToolCall]]:
    """The whole output at once: (content, calls)."""
    parser = ToolCallParser(fmt, names)
    c1, k1 = parser.feed(text)
    c2, k2 = parser.finish()
    return c1 + c2, k1 + k2
