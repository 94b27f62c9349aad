"""libllama's named chat formats, written as Jinja templates.

``BUILTIN_TEMPLATES`` maps every name the pinned libllama accepts (``llama_chat_builtin_templates``)
to a Jinja source that renders messages exactly as ``llama_chat_apply_template`` does for that
name (tests/engine/test_builtin_templates.py compares them). Like libllama, they emit no BOS
token (the tokenizer adds it) and render a null ``content`` as empty text. ``trim`` is Python's
``str.strip`` here and ASCII-only in libllama; they differ only on non-ASCII whitespace.

Being Jinja, a built-in is handled like any model template: it can be shown in ``/props`` and
rendered by ``ChatTemplate``. Most formats are "a prefix and a suffix per role" and are built
by ``_by_role``; the few with state across messages are written out.
"""
from __future__ import annotations

import json

__all__ = ["BUILTIN_TEMPLATES"]


def _q(text: str) -> str:
    """``text`` as a Jinja string literal."""
    return json.dumps(text, ensure_ascii=False)


def _by_role(cases: list[tuple[str | None, str]], *, generation: str = "", start: str = "") -> str:
    """A template that writes ``start``, then for each message the Jinja expression of the first
    case whose role matches (``None`` matches any role; no match writes nothing), then
    ``generation`` when ``add_generation_prompt``. Expressions see ``content`` and ``role``."""
    out = []
    if start:
        out.append(f"{{{{- {_q(start)} -}}}}")
    out.append("{%- for message in messages -%}")
    out.append("{%- set content = message.content or '' -%}{%- set role = message.role -%}")
    for i, (role, expr) in enumerate(cases):
        if role is None:
            out.append("{%- else -%}" if i else "{%- if true -%}")
        else:
            out.append(f"{{%- {'elif' if i else 'if'} role == {_q(role)} -%}}")
        out.append(f"{{{{- {expr} -}}}}")
    out.append("{%- endif -%}")
    out.append("{%- endfor -%}")
    if generation:
        out.append(f"{{%- if add_generation_prompt -%}}{{{{- {_q(generation)} -}}}}{{%- endif -%}}")
    return "\n".join(out) + "\n"


def _each(prefix: str, suffix: str, *, generation: str = "", trim: bool = False, start: str = "") -> str:
    """Every message as ``prefix`` + content + ``suffix``; ``{role}`` in either is the role."""
    def part(text: str) -> str:
        pieces = [_q(p) for p in text.split("{role}")]
        return " + role + ".join(pieces)
    body = "(content | trim)" if trim else "content"
    return _by_role([(None, f"{part(prefix)} + {body} + {part(suffix)}")], generation=generation, start=start)


def _llama2(*, system: bool, bos_in_history: bool = False, strip: bool = False) -> str:
    """``[INST] user [/INST]assistant</s>``; the system prompt opens the first turn (wrapped in
    ``<<SYS>>`` when the variant supports a system role)."""
    content = "(message.content or '') | trim" if strip else "message.content or ''"
    system_expr = "'<<SYS>>\\n' + content + '\\n<</SYS>>\\n\\n'" if system else "content + '\\n'"
    reopen = "<s>[INST] " if bos_in_history else "[INST] "
    return (
        "{{- '[INST] ' -}}\n"
        "{%- set ns = namespace(inside_turn=true) -%}\n"
        "{%- for message in messages -%}\n"
        f"{{%- set content = {content} -%}}\n"
        "{%- if not ns.inside_turn -%}"
        f"{{{{- {_q(reopen)} -}}}}{{%- set ns.inside_turn = true -%}}{{%- endif -%}}\n"
        f"{{%- if message.role == 'system' -%}}{{{{- {system_expr} -}}}}\n"
        "{%- elif message.role == 'user' -%}{{- content + ' [/INST]' -}}\n"
        "{%- else -%}{{- content + '</s>' -}}{%- set ns.inside_turn = false -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )


def _mistral(*, leading: str, trailing: str, trim_assistant: bool) -> str:
    """Mistral v1/v3/v3-tekken: ``{leading}[INST]{trailing}`` opens each turn."""
    assistant = "(content | trim)" if trim_assistant else "content"
    return (
        "{%- set ns = namespace(inside_turn=false) -%}\n"
        "{%- for message in messages -%}\n"
        "{%- set content = message.content or '' -%}\n"
        "{%- if not ns.inside_turn -%}"
        f"{{{{- {_q(leading + '[INST]' + trailing)} -}}}}{{%- set ns.inside_turn = true -%}}{{%- endif -%}}\n"
        "{%- if message.role == 'system' -%}{{- content + '\\n\\n' -}}\n"
        f"{{%- elif message.role == 'user' -%}}{{{{- content + {_q(leading + '[/INST]')} -}}}}\n"
        f"{{%- else -%}}{{{{- {_q(trailing)} + {assistant} + '</s>' -}}}}"
        "{%- set ns.inside_turn = false -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )


def _mistral_v7(space: str) -> str:
    return _by_role([
        ("system", f"'[SYSTEM_PROMPT]{space}' + content + '[/SYSTEM_PROMPT]'"),
        ("user", f"'[INST]{space}' + content + '[/INST]'"),
        (None, f"'{space}' + content + '</s>'"),
    ])


# Gemma has no system role: system text is merged into the next user turn.
_GEMMA = r"""
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- set content = (message.content or '') | trim -%}
{%- if message.role == 'system' -%}
{%- set ns.system = ns.system + content -%}
{%- else -%}
{%- set role = 'model' if message.role == 'assistant' else message.role -%}
{{- '<start_of_turn>' + role + '\n' -}}
{%- if ns.system and role != 'model' -%}
{{- ns.system + '\n\n' -}}
{%- set ns.system = '' -%}
{%- endif -%}
{{- content + '<end_of_turn>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""

# Orion has no system role either: system text opens the next user turn; no generation prompt
# (each user turn already ends with the assistant's opening).
_ORION = r"""
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- set content = message.content or '' -%}
{%- if message.role == 'system' -%}
{%- set ns.system = ns.system + content -%}
{%- elif message.role == 'user' -%}
{{- 'Human: ' -}}
{%- if ns.system -%}{{- ns.system + '\n\n' -}}{%- set ns.system = '' -%}{%- endif -%}
{{- content + '\n\nAssistant: </s>' -}}
{%- else -%}
{{- content + '</s>' -}}
{%- endif -%}
{%- endfor -%}
"""

# Monarch puts <s> inside the history, except before the first message.
_MONARCH = r"""
{%- for message in messages -%}
{{- ('' if loop.first else '<s>') + message.role + '\n' + (message.content or '') + '</s>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<s>assistant\n' -}}{%- endif -%}
"""

# GigaChat: a leading system message goes right after <s>; later system messages are dropped.
_GIGACHAT = r"""
{%- set has_system = messages and messages[0].role == 'system' -%}
{{- '<s>' -}}
{%- if has_system -%}{{- (messages[0].content or '') + '<|message_sep|>' -}}{%- endif -%}
{%- for message in messages -%}
{%- if not (loop.first and has_system) -%}
{%- set content = message.content or '' -%}
{%- if message.role == 'user' -%}
{{- 'user<|role_sep|>' + content + '<|message_sep|>available functions<|role_sep|>[]<|message_sep|>' -}}
{%- elif message.role == 'assistant' -%}
{{- 'assistant<|role_sep|>' + content + '<|message_sep|>' -}}
{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'assistant<|role_sep|>' -}}{%- endif -%}
"""

# Bailing (Ling/Ring): roles in upper case, "user" as HUMAN.
_BAILING_TURN = "'<role>' + ('HUMAN' if role == 'user' else role | upper) + '</role>' + content"

_BAILING2 = (
    "{%- if not (messages and messages[0].role == 'system') -%}"
    "{{- '<role>SYSTEM</role>detailed thinking off<|role_end|>' -}}{%- endif -%}\n"
    + _by_role([(None, _BAILING_TURN + " + '<|role_end|>'")], generation="<role>ASSISTANT</role>")
)

# RWKV World: "Assistant:" follows the last message when it is the user's, whatever
# add_generation_prompt says (libllama's behaviour).
_RWKV_WORLD = r"""
{%- for message in messages -%}
{%- set content = (message.content or '') | trim -%}
{%- if message.role == 'system' -%}{{- 'System: ' + content + '\n\n' -}}
{%- elif message.role == 'user' -%}{{- 'User: ' + content + '\n\n' -}}
{%- if loop.last -%}{{- 'Assistant:' -}}{%- endif -%}
{%- elif message.role == 'assistant' -%}{{- 'Assistant: ' + content + '\n\n' -}}
{%- endif -%}
{%- endfor -%}
"""

# Hunyuan dense: a leading system message, then user/assistant turns; no generation prompt.
_HUNYUAN_DENSE = r"""
{%- for message in messages -%}
{%- set content = message.content or '' -%}
{%- if loop.first and message.role == 'system' -%}{{- content + '<｜hy_place▁holder▁no▁3｜>' -}}{%- endif -%}
{%- if message.role == 'assistant' -%}{{- '<｜hy_Assistant｜>' + content + '<｜hy_place▁holder▁no▁2｜>' -}}
{%- elif message.role == 'user' -%}{{- '<｜hy_User｜>' + content + '<｜hy_Assistant｜>' -}}
{%- endif -%}
{%- endfor -%}
"""

_HUNYUAN_VL = r"""
{{- '<｜hy_begin▁of▁sentence｜>' -}}
{%- for message in messages -%}
{%- set content = message.content or '' -%}
{%- if loop.first and message.role == 'system' -%}{{- content + '<｜hy_place▁holder▁no▁3｜>' -}}
{%- elif message.role == 'user' -%}{{- content + '<｜hy_User｜>' -}}
{%- elif message.role == 'assistant' -%}{{- content + '<｜hy_Assistant｜>' -}}
{%- endif -%}
{%- endfor -%}
"""

# Pangu Embedded: a system turn always comes first (empty when the chat has none).
_PANGU_ROLES = {"system": "系统", "user": "用户", "assistant": "助手", "tool": "工具", "function": "方法"}
_PANGU = (
    "{%- if messages and messages[0].role != 'system' -%}{{- '[unused9]系统：[unused10]' -}}{%- endif -%}\n"
    + _by_role([(role, f"'[unused9]{name}：' + content + '[unused10]'") for role, name in _PANGU_ROLES.items()],
               generation="[unused9]助手：")
)

_KIMI_K2 = _by_role([
    ("system", "'<|im_system|>system<|im_middle|>' + content + '<|im_end|>'"),
    ("user", "'<|im_user|>user<|im_middle|>' + content + '<|im_end|>'"),
    ("assistant", "'<|im_assistant|>assistant<|im_middle|>' + content + '<|im_end|>'"),
    ("tool", "'<|im_system|>tool<|im_middle|>' + content + '<|im_end|>'"),
    (None, "content + '<|im_end|>'"),
], generation="<|im_assistant|>assistant<|im_middle|>")


def _exaone(tag: str, *, sep: str, user_end: str, tool: bool) -> str:
    """EXAONE 3/4 (``[|role|]``) and EXAONE MoE (``<|role|>\\n``): trimmed content."""
    roles = ["system", "user", "assistant"] + (["tool"] if tool else [])
    cases = []
    for role in roles:
        end = user_end if role == "user" else tag.format(role="endofturn") + "\n"
        cases.append((role, f"{_q(tag.format(role=role) + sep)} + (content | trim) + {_q(end)}"))
    return _by_role(cases, generation=tag.format(role="assistant") + sep)


def _granite(version: str) -> str:
    if version == "3":
        opening = ("'<|start_of_role|>' + role + '<|end_of_role|>'"
                   " + ('<|tool_call|>' if role == 'assistant_tool_call' else '')")
    else:
        opening = ("('<|start_of_role|>assistant<|end_of_role|><|tool_call|>' if role == 'assistant_tool_call'"
                   " else '<|start_of_role|>' + role + '<|end_of_role|>')")
    return _by_role([(None, f"{opening} + content + '<|end_of_text|>\\n'")],
                    generation="<|start_of_role|>assistant<|end_of_role|>")


BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _each("<|im_start|>{role}\n", "<|im_end|>\n", generation="<|im_start|>assistant\n"),
    "llama2": _llama2(system=False),
    "llama2-sys": _llama2(system=True),
    "llama2-sys-bos": _llama2(system=True, bos_in_history=True),
    "llama2-sys-strip": _llama2(system=True, strip=True),
    "mistral-v1": _mistral(leading=" ", trailing=" ", trim_assistant=False),
    "mistral-v3": _mistral(leading="", trailing=" ", trim_assistant=True),
    "mistral-v3-tekken": _mistral(leading="", trailing="", trim_assistant=False),
    "mistral-v7": _mistral_v7(" "),
    "mistral-v7-tekken": _mistral_v7(""),
    "phi3": _each("<|{role}|>\n", "<|end|>\n", generation="<|assistant|>\n"),
    "phi4": _each("<|im_start|>{role}<|im_sep|>", "<|im_end|>", generation="<|im_start|>assistant<|im_sep|>"),
    "falcon3": _each("<|{role}|>\n", "\n", generation="<|assistant|>\n"),
    "zephyr": _each("<|{role}|>\n", "<|endoftext|>\n", generation="<|assistant|>\n"),
    "monarch": _MONARCH,
    "gemma": _GEMMA,
    "orion": _ORION,
    "openchat": _by_role([
        ("system", "content + '<|end_of_turn|>'"),
        (None, "'GPT4 Correct ' + (role[:1] | upper) + role[1:] + ': ' + content + '<|end_of_turn|>'"),
    ], generation="GPT4 Correct Assistant:"),
    "vicuna": _by_role([
        ("system", "content + '\\n\\n'"),
        ("user", "'USER: ' + content + '\\n'"),
        ("assistant", "'ASSISTANT: ' + content + '</s>\\n'"),
    ], generation="ASSISTANT:"),
    "vicuna-orca": _by_role([
        ("system", "'SYSTEM: ' + content + '\\n'"),
        ("user", "'USER: ' + content + '\\n'"),
        ("assistant", "'ASSISTANT: ' + content + '</s>\\n'"),
    ], generation="ASSISTANT:"),
    "deepseek": _by_role([
        ("system", "content"),
        ("user", "'### Instruction:\\n' + content + '\\n'"),
        ("assistant", "'### Response:\\n' + content + '\\n<|EOT|>\\n'"),
    ], generation="### Response:\n"),
    "deepseek2": _by_role([
        ("system", "content + '\\n\\n'"),
        ("user", "'User: ' + content + '\\n\\n'"),
        ("assistant", "'Assistant: ' + content + '<｜end▁of▁sentence｜>'"),
    ], generation="Assistant:"),
    "deepseek3": _by_role([
        ("system", "content + '\\n\\n'"),
        ("user", "'<｜User｜>' + content"),
        ("assistant", "'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'"),
    ], generation="<｜Assistant｜>"),
    "deepseek-ocr": _by_role([(None, "content")]),
    "command-r": _by_role([
        (role, f"'<|START_OF_TURN_TOKEN|><|{token}|>' + (content | trim) + '<|END_OF_TURN_TOKEN|>'")
        for role, token in (("system", "SYSTEM_TOKEN"), ("user", "USER_TOKEN"), ("assistant", "CHATBOT_TOKEN"))
    ], generation="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
    "llama3": _each("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", trim=True,
                    generation="<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "chatglm3": _each("<|{role}|>\n ", "", start="[gMASK]sop", generation="<|assistant|>"),
    "chatglm4": _each("<|{role}|>\n", "", start="[gMASK]<sop>", generation="<|assistant|>\n"),
    "glmedge": _each("<|{role}|>\n", "", generation="<|assistant|>"),
    "minicpm": _by_role([("user", "'<用户>' + (content | trim) + '<AI>'"), (None, "content | trim")]),
    "exaone3": _exaone("[|{role}|]", sep="", user_end="\n", tool=False),
    "exaone4": _exaone("[|{role}|]", sep="", user_end="\n", tool=True),
    "exaone-moe": _exaone("<|{role}|>", sep="\n", user_end="<|endofturn|>\n", tool=True),
    "rwkv-world": _RWKV_WORLD,
    "granite": _granite("3"),
    "granite-4.0": _granite("4"),
    "granite-4.1": _granite("4"),
    "gigachat": _GIGACHAT,
    "megrez": _each("<|role_start|>{role}<|role_end|>", "<|turn_end|>",
                    generation="<|role_start|>assistant<|role_end|>"),
    "yandex": _by_role([
        ("user", "' Пользователь: ' + content + '\\n\\n'"),
        ("assistant", "' Ассистент: ' + content + '\\n\\n'"),
    ], generation=" Ассистент:[SEP]"),
    "bailing": _by_role([(None, _BAILING_TURN)], generation="<role>ASSISTANT</role>"),
    "bailing-think": _by_role([(None, _BAILING_TURN)], generation="<role>ASSISTANT</role><think>"),
    "bailing2": _BAILING2,
    "llama4": _each("<|header_start|>{role}<|header_end|>\n\n", "<|eot|>", trim=True,
                    generation="<|header_start|>assistant<|header_end|>\n\n"),
    "smolvlm": _by_role([
        ("system", "content + '\\n\\n'"),
        ("user", "'User: ' + content + '<end_of_utterance>\\n'"),
        (None, "'Assistant: ' + content + '<end_of_utterance>\\n'"),
    ], start="<|im_start|>", generation="Assistant:"),
    "hunyuan-moe": _by_role([
        ("system", "'<|startoftext|>' + content + '<|extra_4|>'"),
        ("assistant", "content + '<|eos|>'"),
        (None, "'<|startoftext|>' + content + '<|extra_0|>'"),
    ]),
    "gpt-oss": _by_role([(None, "'<|start|>' + role + '<|message|>' + content"
                                " + ('<|return|>' if role == 'assistant' else '<|end|>')")],
                        generation="<|start|>assistant"),
    "hunyuan-dense": _HUNYUAN_DENSE,
    "hunyuan-vl": _HUNYUAN_VL,
    "kimi-k2": _KIMI_K2,
    "seed_oss": _by_role([(None, "'<seed:bos>' + role + '\\n' + ((content | trim) if role == 'assistant'"
                                 " else content) + '<seed:eos>'")], generation="<seed:bos>assistant\n"),
    "grok-2": _by_role([
        ("system", "'System: ' + (content | trim) + '<|separator|>\\n\\n'"),
        ("user", "'Human: ' + (content | trim) + '<|separator|>\\n\\n'"),
        ("assistant", "'Assistant: ' + content + '<|separator|>\\n\\n'"),
    ], generation="Assistant:"),
    "pangu-embedded": _PANGU,
    "solar-open": _each("<|begin|>{role}<|content|>", "<|end|>", generation="<|begin|>assistant"),
}
# "mistral" alone means the classic Mistral-Instruct format (v1).
BUILTIN_TEMPLATES["mistral"] = BUILTIN_TEMPLATES["mistral-v1"]
