"""api/chat.py: messages + tools + thinking options → prompt, grammar and output spec; the output
parser that combines reasoning and tool calls."""
from __future__ import annotations

import json

import pytest

from chat_fixtures import HERMES_TEMPLATE, LLAMA3_TEMPLATE, MISTRAL_TEMPLATE, THINK_TEMPLATE
from llamacy.api.builtin_templates import BUILTIN_TEMPLATES
from llamacy.api.chat import ChatOptions, ChatOutputParser, OutputSpec, render_chat, template_caps
from llamacy.api.chat_template import ChatTemplate
from llamacy.api.reasoning import ReasoningSpec
from llamacy.api.tool_calls import ChatTools, ToolCallFormat as F, ToolSpec
from llamacy.errors import InvalidRequestError

WEATHER = ToolSpec("get_weather", "Weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
]
CHATML = ChatTemplate(BUILTIN_TEMPLATES["chatml"])


def test_template_caps():
    caps = template_caps(ChatTemplate(HERMES_TEMPLATE))
    assert caps.tools and caps.tool_calls and caps.tool_responses and caps.system
    caps = template_caps(CHATML)
    assert not caps.tools and not caps.tool_calls and caps.tool_responses and caps.system
    caps = template_caps(ChatTemplate(BUILTIN_TEMPLATES["vicuna"]))   # drops roles it does not know
    assert caps.system and not caps.tool_responses


@pytest.mark.parametrize("source, fmt, marker", [
    (HERMES_TEMPLATE, F.HERMES, '"name": "get_weather", "arguments": {"city": "Paris"}'),
    (LLAMA3_TEMPLATE, F.LLAMA3, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (MISTRAL_TEMPLATE, F.MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
])
def test_native_templates_render_tools_calls_and_results(source, fmt, marker):
    chat = render_chat(ChatTemplate(source), HISTORY, ChatOptions(tools=ChatTools((WEATHER,))))
    assert chat.output.tool_format is fmt
    assert '"description": "Weather in a city"' in chat.prompt        # the template listed the tool
    assert marker in chat.prompt                                       # the earlier call, arguments as an object
    assert "21 C, sunny" in chat.prompt
    assert "You can call these tools" not in chat.prompt              # no generic instructions
    assert chat.grammar is None                                        # auto: free text, parsed afterwards
    forced = render_chat(ChatTemplate(source), HISTORY, ChatOptions(tools=ChatTools((WEATHER,), choice="required")))
    assert forced.grammar and "tool-0-args" in forced.grammar


def test_generic_format_for_a_template_without_tools():
    chat = render_chat(CHATML, HISTORY, ChatOptions(tools=ChatTools((WEATHER,))))
    assert chat.output.tool_format is F.GENERIC and chat.output.tool_names == {"get_weather"}
    assert chat.prompt.startswith("<|im_start|>system\nBe brief.\n\nYou can call these tools:")
    # the earlier call becomes the JSON the model is asked to write; the result is rendered as-is
    assert '<|im_start|>assistant\n{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, ' \
           '"id": "call_1"}]}<|im_end|>' in chat.prompt
    assert "<|im_start|>tool\n21 C, sunny<|im_end|>" in chat.prompt
    assert chat.grammar and '{\\"response\\": ' in chat.grammar       # auto: a JSON answer either way


def test_generic_tool_results_become_user_turns_when_the_role_is_not_rendered():
    chat = render_chat(ChatTemplate(BUILTIN_TEMPLATES["vicuna"]), HISTORY[1:], ChatOptions())
    assert '{"tool_response": {"tool": "get_weather", "tool_call_id": "call_1", "content": "21 C, sunny"}}' in chat.prompt


def test_no_system_turn_gets_one_for_the_tools():
    chat = render_chat(CHATML, [{"role": "user", "content": "hi"}], ChatOptions(tools=ChatTools((WEATHER,))))
    assert chat.prompt.startswith("<|im_start|>system\nYou can call these tools:")


def test_no_tools_no_grammar_no_tool_parsing():
    chat = render_chat(ChatTemplate(HERMES_TEMPLATE), HISTORY[:2], ChatOptions())
    assert chat.grammar is None and chat.output.tool_format is None
    assert "# Tools" not in chat.prompt


def test_thinking_block_opened_by_the_template():
    chat = render_chat(ChatTemplate(THINK_TEMPLATE), HISTORY[:2], ChatOptions())
    assert chat.prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert chat.output.reasoning.starts_inside and chat.output.reasoning.enabled
    off = render_chat(ChatTemplate(THINK_TEMPLATE), HISTORY[:2], ChatOptions(enable_thinking=False))
    assert off.prompt.endswith("<|im_start|>assistant\n") and not off.output.reasoning.starts_inside
    none = render_chat(ChatTemplate(THINK_TEMPLATE), HISTORY[:2], ChatOptions(reasoning_format="none"))
    assert not none.output.reasoning.enabled


def test_a_forced_block_is_closed_when_thinking_is_off_and_thoughts_may_precede_a_grammar():
    forced_think = "{{ messages[0].content }}<think>\n"      # ignores enable_thinking
    off = render_chat(ChatTemplate(forced_think), [{"role": "user", "content": "q"}], ChatOptions(enable_thinking=False))
    assert off.prompt == "q<think></think>\n\n" and not off.output.reasoning.starts_inside
    # with tools (as today's llama-server) the block stays open: the grammar starts after it
    tools = ChatOptions(tools=ChatTools((WEATHER,), choice="required"))
    chat = render_chat(ChatTemplate(forced_think), [{"role": "user", "content": "q"}], tools)
    assert chat.prompt.endswith("<think>") and chat.output.reasoning.starts_inside
    assert chat.grammar.startswith('root ::= llamacy-thoughts "</think>" [ \\t\\n]* llamacy-answer\n')
    assert "\nllamacy-answer ::= " in chat.grammar and "\nroot ::= " not in chat.grammar
    # thoughts left in the answer (reasoning_format none) would break the grammar's answer: closed
    raw = ChatOptions(tools=ChatTools((WEATHER,), choice="required"), reasoning_format="none")
    assert render_chat(ChatTemplate(forced_think), [{"role": "user", "content": "q"}], raw).prompt.endswith(
        "</think>\n\n")


def test_template_kwargs_reach_the_template():
    t = ChatTemplate("{{ messages[0].content }}|{{ flavour }}")
    assert render_chat(t, [{"role": "user", "content": "q"}], ChatOptions(template_kwargs={"flavour": "x"})).prompt == "q|x"


@pytest.mark.parametrize("messages, message", [
    ([], "non-empty"),
    ("hi", "non-empty"),
    ([{"role": "assistant", "content": "", "tool_calls": "x"}], "tool_calls must be an array"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}], r"tool_calls\[0\]"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}],
     "arguments must be a JSON object"),
])
def test_bad_messages(messages, message):
    with pytest.raises(InvalidRequestError, match=message):
        render_chat(CHATML, messages, ChatOptions())


def test_output_parser_reasoning_then_tool_calls_streaming():
    spec = OutputSpec(reasoning=ReasoningSpec(starts_inside=True), tool_format=F.HERMES,
                      tool_names=frozenset({"get_weather"}))
    text = ('The user wants weather.</think>\n\nChecking.\n<tool_call>\n'
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    parser = ChatOutputParser(spec)
    deltas = [parser.feed(text[i:i + 3]) for i in range(0, len(text), 3)] + [parser.finish()]
    assert "".join(d.reasoning for d in deltas) == "The user wants weather."
    assert "".join(d.content for d in deltas) == "Checking.\n"
    assert all("<" not in d.content and "</" not in d.reasoning for d in deltas)
    msg = parser.message()
    assert msg.content == "Checking." and msg.reasoning_content == "The user wants weather."
    assert [(c.name, json.loads(c.arguments)) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]
    whole = ChatOutputParser(spec).parse(text)
    assert (whole.content, whole.reasoning_content) == (msg.content, msg.reasoning_content)
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [(c.name, c.arguments) for c in msg.tool_calls]


def test_output_parser_plain_text():
    msg = ChatOutputParser(OutputSpec()).parse("Hello <think>x</think>")
    assert msg.content == "Hello <think>x</think>" and msg.reasoning_content is None and msg.tool_calls == []
