"""api/tool_calls.py: formats, grammars (checked with the test GBNF matcher), and parsing — at
once and incrementally, where a partial marker never reaches the content."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from gbnf_matcher import Grammar
from llamacy.api.tool_calls import (ChatTools, ToolCallFormat as F, ToolCallParser, ToolSpec, detect_tool_format,
                                    generic_tools_prompt, parse_tool_calls, tool_call_grammar)
from llamacy.errors import InvalidRequestError

WEATHER = ToolSpec("get_weather", "Weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"]})
ADD = ToolSpec("add", "", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"]})
NAMES = frozenset({"get_weather", "add"})

HERMES = ('I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n'
          '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')
MISTRAL = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}, "id": "abcDEF123"}, ' \
          '{"name": "add", "arguments": {"a": 1, "b": 2}}]'
LLAMA3 = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}; ' \
         '{"name": "add", "parameters": {"a": 1, "b": 2}}'
GENERIC = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}, ' \
          '{"name": "add", "arguments": {"a": 1, "b": 2}}]}'
OUTPUTS = {F.HERMES: HERMES, F.MISTRAL: MISTRAL, F.LLAMA3: LLAMA3, F.GENERIC: GENERIC}
CONTENT = {F.HERMES: "I will check.", F.MISTRAL: "", F.LLAMA3: "", F.GENERIC: ""}


@pytest.mark.parametrize("fmt", list(F))
def test_parse_each_format(fmt):
    content, calls = parse_tool_calls(fmt, NAMES, OUTPUTS[fmt])
    assert content.strip() == CONTENT[fmt]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"}), ("add", {"a": 1, "b": 2})]
    assert len({c.id for c in calls}) == 2
    if fmt is F.MISTRAL:
        assert calls[0].id == "abcDEF123" and len(calls[1].id) == 9


@pytest.mark.parametrize("fmt, text", [
    (F.HERMES, "Just text, no calls."),
    (F.HERMES, "<tool_call>not json</tool_call>"),
    (F.HERMES, '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>'),
    (F.MISTRAL, "[TOOL_CALLS] oops"),
    (F.LLAMA3, "Hello {not a call}"),
    (F.LLAMA3, '{"answer": 42}'),
    (F.GENERIC, "plain text"),
    (F.GENERIC, '{"something": "else"}'),
])
def test_text_that_is_not_a_call_stays_content(fmt, text):
    content, calls = parse_tool_calls(fmt, NAMES, text)
    assert calls == [] and content == text


def test_generic_response_is_content_with_escapes():
    content, calls = parse_tool_calls(F.GENERIC, NAMES, '{"response": "Hi \\"you\\"\\n\\u00e9 \\ud83d\\ude00"}')
    assert calls == [] and content == 'Hi "you"\né 😀'


def test_arguments_given_as_json_text_are_accepted():
    _, calls = parse_tool_calls(F.HERMES, NAMES, '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert json.loads(calls[0].arguments) == {"a": 1}


def test_unclosed_hermes_block_with_complete_json_is_a_call():
    _, calls = parse_tool_calls(F.HERMES, NAMES, '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}')
    assert [c.name for c in calls] == ["add"]


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + points, points + [len(text)])]


@given(fmt=st.sampled_from(list(F)), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_streaming_matches_whole_and_never_leaks_markers(fmt, cuts):
    text = OUTPUTS[fmt]
    parser = ToolCallParser(fmt, NAMES)
    pieces, calls = [], []
    for chunk in chunked(text, cuts):
        content, found = parser.feed(chunk)
        pieces.append(content)
        calls += found
    content, found = parser.finish()
    pieces.append(content)
    calls += found
    whole_content, whole_calls = parse_tool_calls(fmt, NAMES, text)
    assert "".join(pieces) == whole_content
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole_calls]
    for piece in pieces:
        assert "<" not in piece.replace("I will check.", "") and "[" not in piece and "{" not in piece


@given(cuts=st.lists(st.integers(0, 80), max_size=10))
def test_generic_response_streams_in_pieces(cuts):
    text = '{"response": "Hello \\"there\\", caf\\u00e9 \\ud83d\\ude00!"}'
    parser = ToolCallParser(F.GENERIC, NAMES)
    out = [parser.feed(chunk)[0] for chunk in chunked(text, cuts)] + [parser.finish()[0]]
    assert "".join(out) == 'Hello "there", café 😀!'


def test_generic_response_is_streamed_before_it_ends():
    parser = ToolCallParser(F.GENERIC, NAMES)
    assert parser.feed('{"resp') == ("", [])
    assert parser.feed('onse": "Hel') == ("Hel", [])
    assert parser.feed('lo\\') == ("lo", [])
    assert parser.feed('n"}') == ("\n", [])
    assert parser.finish() == ("", [])


@pytest.mark.parametrize("fmt", list(F))
@pytest.mark.parametrize("parallel", [True, False])
def test_required_grammar_accepts_calls_with_valid_arguments_only(fmt, parallel):
    tools = ChatTools((WEATHER, ADD), choice="required", parallel=parallel)
    g = Grammar(tool_call_grammar(tools, fmt))
    one = {F.HERMES: '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
           F.MISTRAL: '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]',
           F.LLAMA3: '{"name": "add", "parameters": {"a": 1, "b": 2}}',
           F.GENERIC: '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}'}[fmt]
    assert g.matches(one)
    assert not g.matches(one.replace('"b": 2', '"b": "two"'))        # argument of the wrong type
    assert not g.matches(one.replace('"add"', '"sub"'))              # unknown tool
    assert not g.matches("Sure!")                                   # text is not allowed
    two = {F.HERMES: one + "\n" + one, F.MISTRAL: one[:-1] + ", " + one[len("[TOOL_CALLS]["):],
           F.LLAMA3: one + "; " + one, F.GENERIC: one[:-2] + ", " + one[len('{"tool_calls": ['):]}[fmt]
    assert g.matches(two) == parallel
    content, calls = parse_tool_calls(fmt, NAMES, two)
    assert len(calls) == 2 and content.strip() == ""


def test_named_function_grammar_allows_only_that_function():
    tools = ChatTools((WEATHER, ADD), choice="function", function="get_weather")
    g = Grammar(tool_call_grammar(tools, F.HERMES))
    assert g.matches('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "f"}}\n</tool_call>')
    assert not g.matches('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')


def test_auto_grammar_only_for_generic_and_it_allows_a_response():
    tools = ChatTools((WEATHER,))
    for fmt in (F.HERMES, F.MISTRAL, F.LLAMA3):
        assert tool_call_grammar(tools, fmt) is None
    g = Grammar(tool_call_grammar(tools, F.GENERIC))
    assert g.matches('{"response": "It is sunny."}')
    assert g.matches('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}]}')
    assert not g.matches("It is sunny.")


def test_generic_prompt_lists_tools_and_the_answer_shape():
    text = generic_tools_prompt(ChatTools((WEATHER, ADD)))
    assert "get_weather" in text and "Weather in a city" in text and '{"response"' in text
    forced = generic_tools_prompt(ChatTools((WEATHER, ADD), choice="function", function="add"))
    assert "get_weather" not in forced and '"response"' not in forced


def test_detect_format():
    assert detect_tool_format("... <tool_call> ...", True) is F.HERMES
    assert detect_tool_format("... [TOOL_CALLS] ...", True) is F.MISTRAL
    assert detect_tool_format("<|start_header_id|>ipython<|end_header_id|>", True) is F.LLAMA3
    assert detect_tool_format("... <tool_call> ...", False) is F.GENERIC
    assert detect_tool_format("{{ tools }}", True) is F.GENERIC


@pytest.mark.parametrize("make, message", [
    (lambda: ToolSpec("bad name"), "tool name"),
    (lambda: ToolSpec("x" * 65), "tool name"),
    (lambda: ChatTools(()), "at least one tool"),
    (lambda: ChatTools((ADD, ADD)), "unique"),
    (lambda: ChatTools((ADD,), choice="function", function="nope"), "not in 'tools'"),
    (lambda: ChatTools(tuple(ToolSpec(f"t{i}") for i in range(129))), "more than 128"),
])
def test_bad_tool_definitions(make, message):
    with pytest.raises(InvalidRequestError, match=message):
        make()


def test_lone_surrogates_and_bad_escapes_never_make_invalid_text():
    content, _ = parse_tool_calls(F.GENERIC, NAMES, '{"response": "a\\ud800b"}')
    assert content == "a\ufffdb"
    content.encode("utf-8")
    content, _ = parse_tool_calls(F.GENERIC, NAMES, '{"response": "x \\q y"}')
    assert content == "x \\q y"
    _, calls = parse_tool_calls(F.GENERIC, NAMES, '{"tool_calls": [{"name": "add", "arguments": {"a": "\\udc00"}}]}')
    assert json.loads(calls[0].arguments) == {"a": "\ufffd"}
    calls[0].arguments.encode("utf-8")
