"""Tool calling through the real server and the official ``openai`` client, with the default
model (SmolLM2-135M, whose ChatML template has no tool support: the GENERIC format) and with
templates in the Hermes/Qwen, Llama 3.x and Mistral styles (their native formats). With
``required`` or a named function the output is grammar-constrained, so even the 135M model's
calls have arguments that validate against the tool's schema."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import requests

from chat_fixtures import HERMES_TEMPLATE, LLAMA3_TEMPLATE, MISTRAL_TEMPLATE

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 20},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
SUM_PARAMS = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 1000},
                   "b": {"type": "integer", "minimum": 0, "maximum": 1000}},
    "required": ["a", "b"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": SUM_PARAMS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "add": SUM_PARAMS}
DEEP: dict = {"type": "object"}
_node = DEEP
for _ in range(80):
    _node["properties"] = {"x": {"type": "object"}}
    _node = _node["properties"]["x"]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "4096", "-np", "2")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def check_calls(calls, allowed=("get_weather", "add")) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({c.id for c in calls}) == len(calls)


def stream_calls(client, **kw):
    """Stream a request; returns (content, tool calls rebuilt from the deltas, finish reasons)."""
    chunks = list(client.chat.completions.create(model="x", stream=True, **kw))
    content, calls, finishes = "", {}, []
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = d.id or call["id"]
            call["name"] += (d.function.name or "") if d.function else ""
            call["arguments"] += (d.function.arguments or "") if d.function else ""
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    return content, [calls[i] for i in sorted(calls)], finishes


@pytest.fixture(scope="module")
def required(client):
    """One non-streamed answer with tool_choice required (greedy), shared by the tests."""
    return client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, tool_choice="required",
                                          temperature=0, max_tokens=120)


def test_required_returns_calls_whose_arguments_validate(required):
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    check_calls(choice.message.tool_calls)


def test_required_streaming_deltas(client, required):
    content, calls, finishes = stream_calls(client, messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=120)
    assert finishes == ["tool_calls"]
    assert content == ""
    assert calls and all(c["id"] for c in calls)
    for c in calls:
        jsonschema.validate(json.loads(c["arguments"]), SCHEMAS[c["name"]])
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (t.function.name, t.function.arguments) for t in required.choices[0].message.tool_calls]


def test_named_function_is_the_one_called(client):
    r = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=TOOLS, temperature=0,
        tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=100)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "add"
    check_calls(calls, allowed=("add",))


def test_parallel_tool_calls_false_gives_one_call(server, client):
    r = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0.8, seed=3, max_tokens=120)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1
    check_calls(calls)


def test_auto_answers_with_text_or_calls(client):
    r = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, temperature=0.7, seed=1,
                                       max_tokens=60)
    choice = r.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        check_calls(choice.message.tool_calls)
    else:
        # the GENERIC answer {"response": "..."} comes back as plain text, without the JSON
        assert choice.finish_reason in ("stop", "length")
        assert not (choice.message.content or "").lstrip().startswith('{"response"')


def test_none_means_no_tools(server, client):
    plain = client.chat.completions.create(model="x", messages=ASK, temperature=0, max_tokens=16)
    r = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, tool_choice="none", temperature=0,
                                       max_tokens=16)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content == plain.choices[0].message.content


def test_history_with_tool_calls_and_results(server, client):
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "22 degrees and sunny"},
    ]
    prompt = server.post("/apply-template", json={"messages": messages, "tools": TOOLS}).json()["prompt"]
    assert '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, ' \
           '"id": "call_abc"}]}' in prompt
    assert "22 degrees and sunny" in prompt and "You can call these tools" in prompt
    r = client.chat.completions.create(model="x", messages=messages, tools=TOOLS, temperature=0, max_tokens=60)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize("body, message", [
    ({"tools": "x"}, "'tools' must be an array"),
    ({"tools": [{"type": "function"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tool name"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "'tool_choice' must be"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not in 'tools'"),
    ({"tool_choice": "required"}, "'tool_choice' needs 'tools'"),
    ({"tools": TOOLS, "tool_choice": "required", "grammar": "root ::= \"x\""}, "can't be combined"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
      "tool_choice": "required"}, "'not'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP}}], "tool_choice": "required"},
     "nested more than 64 levels"),
    ({"functions": [{"name": "f"}]}, "use 'tools'"),
    ({"messages": ASK + [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}, "must be a JSON object"),
])
def test_bad_tool_requests_are_400(server, body, message):
    r = requests.post(server.url + "/v1/chat/completions", json={"messages": ASK, **body}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and message in err["message"]
    assert server.get("/health").json()["slots_idle"] == 2


@pytest.fixture(scope="module", params=["hermes", "llama3", "mistral"])
def native(request, server_factory):
    template = {"hermes": HERMES_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "mistral": MISTRAL_TEMPLATE}[request.param]
    srv = server_factory("-c", "2048", "--chat-template", template)
    yield request.param, srv, openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=300)
    srv.stop()   # one template server at a time


def test_native_format_required_streaming_and_not(native):
    name, srv, client = native
    prompt = srv.post("/apply-template", json={"messages": ASK, "tools": TOOLS}).json()["prompt"]
    assert '"description": "Current weather in a city"' in prompt and "You can call these tools" not in prompt
    r = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, tool_choice="required",
                                       temperature=0, max_tokens=120)
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(r.choices[0].message.tool_calls)
    if name == "mistral":
        assert all(len(c.id) == 9 and c.id.isalnum() for c in r.choices[0].message.tool_calls)
    content, calls, finishes = stream_calls(client, messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=120)
    assert finishes == ["tool_calls"] and content == ""
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (t.function.name, t.function.arguments) for t in r.choices[0].message.tool_calls]


NATIVE_OUTPUT = {
    "hermes": 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}'
              '\n</tool_call>',
    "llama3": '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]',
}


def test_native_format_auto_output_is_parsed_streaming_and_not(native):
    # tool_choice auto leaves the output free; a request grammar makes the model write a call
    # in the template's format, token by token, which the server must recognise in the stream
    name, srv, client = native
    text = NATIVE_OUTPUT[name]
    grammar = "root ::= " + json.dumps(text)
    extra = {"grammar": grammar}
    r = client.chat.completions.create(model="x", messages=ASK, tools=TOOLS, temperature=0, max_tokens=200,
                                       extra_body=extra)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"})]
    assert msg.content == ("Let me look." if name == "hermes" else None)
    content, calls, finishes = stream_calls(client, messages=ASK, tools=TOOLS, temperature=0, max_tokens=200,
                                            extra_body=extra)
    assert finishes == ["tool_calls"]
    assert content.strip() == (msg.content or "")
    assert "<" not in content and "[" not in content and "{" not in content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"})]
