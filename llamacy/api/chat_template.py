"""Chat templates: OpenAI-style ``messages`` → one prompt string.

Templates are Jinja sources (from the model's GGUF ``tokenizer.chat_template``, from
``--chat-template``, or one of ``BUILTIN_TEMPLATES``) rendered in Jinja's immutable sandbox
with the same options and helpers Hugging Face ``transformers`` gives them
(``trim_blocks``, ``lstrip_blocks``, loop controls, ``raise_exception``, ``tojson``,
``strftime_now``). Every failure — a template that does not compile, a message of the wrong
shape, a template that calls ``raise_exception`` or trips the sandbox — is raised as
``ChatTemplateError``.

The built-in templates (``llamacy.api.builtin_templates``) reproduce libllama's named formats.
"""
from __future__ import annotations

import datetime
import json
import operator
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from llamacy.api.builtin_templates import BUILTIN_TEMPLATES
from llamacy.errors import ChatTemplateError

__all__ = ["BUILTIN_TEMPLATES", "ChatTemplate", "resolve_chat_template"]

# Guards against templates that try to exhaust memory or CPU with one operator.
_MAX_REPEAT_LEN = 1_000_000
_MAX_POW_BITS = 100_000


def _raise_exception(message: str) -> NoReturn:
    """The ``raise_exception(msg)`` helper templates call to reject their input."""
    raise ChatTemplateError(str(message))


def _tojson(
    value: Any,
    indent: int | str | None = None,
    ensure_ascii: bool = False,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as Hugging Face defines it: plain ``json.dumps``, no HTML escaping."""
    return json.dumps(
        value, indent=indent, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    """The current local time formatted with ``fmt`` (templates use it for dates)."""
    return datetime.datetime.now().strftime(fmt)


class _Undefined(jinja2.Undefined):
    """An undefined variable as llama.cpp's template engine treats it: joined to a string with
    ``+`` it counts as empty text (Firefunction's template adds an undefined ``functions``);
    every other use fails as in Jinja."""

    __slots__ = ()

    def __add__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other
        return self._fail_with_undefined_error()


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, made to fail loudly on unsafe attributes, plus limits on
    ``*`` and ``**`` so one expression can't allocate gigabytes (``'x' * 10**10``) or spin
    forever (``(10 ** 1000) ** 1000``)."""

    intercepted_binops = frozenset(["*", "**"])

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Fail at once on an unsafe attribute (``__class__``, ``list.append``, ...) rather
        than yielding an undefined value that prints as empty text."""
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and left.bit_length() * right > _MAX_POW_BITS
            ):
                raise SecurityError("power too large in a chat template")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * count > _MAX_REPEAT_LEN
                ):
                    raise SecurityError("repetition too large in a chat template")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def _make_environment() -> jinja2.Environment:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
        undefined=_Undefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _flatten_content(content: Any, where: str) -> str | None:
    """A message's ``content`` as text: strings and null pass through; a list of
    ``{"type": "text", "text": ...}`` parts is joined with newlines (as llama.cpp does)."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ChatTemplateError(
            f"{where} must be a string, null or a list of content parts, "
            f"not {type(content).__name__}"
        )
    texts: list[str] = []
    for j, part in enumerate(content):
        part_where = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise ChatTemplateError(f"{part_where} must be an object")
        part_type = part.get("type")
        if not isinstance(part_type, str):
            raise ChatTemplateError(f"{part_where}.type must be a string")
        if part_type != "text":
            raise ChatTemplateError(
                f"{part_where}: unsupported content part type {part_type!r} "
                "(only 'text' is supported)"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise ChatTemplateError(f"{part_where}.text must be a string")
        texts.append(text)
    return "\n".join(texts)


def _normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check the shape of ``messages`` and return copies with content flattened to text.

    Keys other than ``role`` and ``content`` (``tool_calls``, ``name``, ...) are kept for
    templates that use them.
    """
    if not isinstance(messages, list):
        raise ChatTemplateError(f"messages must be a list, not {type(messages).__name__}")
    normalized: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ChatTemplateError(f"{where} must be an object")
        if not isinstance(message.get("role"), str):
            raise ChatTemplateError(f"{where}.role must be a string")
        copy = dict(message)
        copy["content"] = _flatten_content(message.get("content"), f"{where}.content")
        normalized.append(copy)
    return normalized


class ChatTemplate:
    """A compiled chat template; ``render`` turns messages into the prompt text."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        if not isinstance(source, str):
            raise ChatTemplateError("chat template must be a string")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _make_environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(
                f"chat template does not compile (line {e.lineno}): {e.message}"
            ) from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from None

    def render(
        self, messages: list[dict], *, add_generation_prompt: bool = True, **extra: Any
    ) -> str:
        """Render ``messages``; ``extra`` (``tools``, ``enable_thinking``, ...) become
        template variables. Raises ``ChatTemplateError`` on any failure."""
        today = datetime.datetime.now()
        context: dict[str, Any] = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            # the dates llama.cpp gives templates (Llama 3.x and Firefunction print them)
            "date_string": today.strftime("%d %b %Y"),
            "datetime": today.strftime("%b %d %Y"),
            **extra,
            "messages": _normalize_messages(messages),
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._template.render(context)
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template failed: {e}") from None
        except Exception as e:  # noqa: BLE001 - a template can raise any Python error
            raise ChatTemplateError(
                f"chat template failed: {type(e).__name__}: {e}"
            ) from None

    def __repr__(self) -> str:
        return f"ChatTemplate({self.source[:40]!r}...)"


def _looks_like_jinja(text: str) -> bool:
    return "{%" in text or "{{" in text


def resolve_chat_template(
    override: str | None,
    model_template: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatTemplate:
    """Pick the chat template: ``override`` (a builtin name or a Jinja source) if given,
    else the model's GGUF template, else ChatML (the spec's default)."""
    if override is not None and override.strip():
        name = override.strip()
        if name in BUILTIN_TEMPLATES:
            source = BUILTIN_TEMPLATES[name]
        elif _looks_like_jinja(override):
            source = override
        else:
            known = ", ".join(sorted(BUILTIN_TEMPLATES))
            raise ChatTemplateError(
                f"unknown chat template {name!r}; built-in templates are: {known} "
                "(or pass a Jinja template string)"
            )
    elif model_template:
        source = model_template
    else:
        source = BUILTIN_TEMPLATES["chatml"]
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)
