"""Every built-in chat template name renders exactly as libllama's ``llama_chat_apply_template``.

The Jinja sources in llamacy.api.builtin_templates are checked against the engine itself, for
every name the pinned libllama lists, over conversations that exercise each format's quirks:
with and without a system prompt, several system messages, a trailing assistant turn,
padding that some formats trim, an extra role, non-ASCII text, and add_generation_prompt off.
"""
from __future__ import annotations

import pytest

from llamacy.api.builtin_templates import BUILTIN_TEMPLATES
from llamacy.api.chat_template import ChatTemplate, resolve_chat_template
from llamacy.engine.model import chat_apply_template, chat_builtin_templates

ENGINE_NAMES = chat_builtin_templates()

CONVERSATIONS = {
    "system-first": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "  Hello. "},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "no-system": [
        {"role": "user", "content": " Bonjour \n"},
        {"role": "assistant", "content": "Salut — ça va ?"},
        {"role": "user", "content": "Très bien."},
    ],
    "two-systems": [
        {"role": "system", "content": "A."},
        {"role": "system", "content": " B "},
        {"role": "user", "content": "Q"},
    ],
    "ends-with-assistant": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "hi"},
    ],
    "tool-role": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "{\"t\": 21}"},
        {"role": "user", "content": "thanks"},
    ],
    "empty-content": [
        {"role": "user", "content": ""},
    ],
    "single-user": [
        {"role": "user", "content": "x"},
    ],
}


def test_every_engine_name_is_built_in() -> None:
    assert len(ENGINE_NAMES) >= 50
    assert set(ENGINE_NAMES) <= set(BUILTIN_TEMPLATES)
    for name in ("monarch", "orion", "openchat", "chatglm3", "chatglm4", "minicpm", "deepseek2",
                 "llama2-sys", "llama2-sys-bos", "llama2-sys-strip"):
        assert name in ENGINE_NAMES


@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "no-gen"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_builtin_matches_libllama(name: str, conversation: str, add_generation_prompt: bool) -> None:
    messages = CONVERSATIONS[conversation]
    expected = chat_apply_template(name, [(m["role"], m["content"]) for m in messages], add_generation_prompt)
    rendered = ChatTemplate(BUILTIN_TEMPLATES[name]).render(messages, add_generation_prompt=add_generation_prompt)
    assert rendered == expected


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_name_resolves_as_override(name: str) -> None:
    tmpl = resolve_chat_template(name, "{{ 'model template' }}")
    assert tmpl.source == BUILTIN_TEMPLATES[name]


def test_unknown_name_is_refused_by_libllama_too() -> None:
    with pytest.raises(ValueError, match="does not know"):
        chat_apply_template("no-such-format", [("user", "x")])
