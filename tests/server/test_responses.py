"""OpenAI's Responses API (/v1/responses, /v1/responses/input_tokens) through the official
``openai`` client, against the real server and the default model."""
from __future__ import annotations

import json

import openai
import pytest

from helpers import ANSWERED_QUESTION, WHOLE_PROMPT

QUESTION = ANSWERED_QUESTION


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", "2")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-no-key-required", max_retries=0, timeout=120)


def test_response(client):
    r = client.responses.create(model="gpt-x", input=QUESTION, instructions="You are a helpful assistant.",
                                max_output_tokens=24, temperature=0)
    assert r.object == "response" and r.status == "completed" and r.model == "gpt-x"
    assert [item.type for item in r.output] == ["message"]
    assert "Paris" in r.output_text
    assert 10 < r.usage.input_tokens and 0 < r.usage.output_tokens <= 24
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_input_items_equal_the_chat_request(server, client):
    """input items and instructions become the same prompt a chat request with those turns gets."""
    r = client.responses.create(model="x", max_output_tokens=12, temperature=0, instructions="Be brief.", input=[
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Paris."}]},
        {"role": "user", "content": "And of Italy?"}])
    chat = server.post("/v1/chat/completions", json={"max_tokens": 12, "temperature": 0, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}]}).json()
    assert r.output_text == chat["choices"][0]["message"]["content"]
    assert r.usage.input_tokens == chat["usage"]["prompt_tokens"]


def test_stream_events_add_up_to_the_response(client):
    plain = client.responses.create(model="x", input=QUESTION, max_output_tokens=16, temperature=0,
                                    extra_body=WHOLE_PROMPT)
    types, text = [], ""
    for event in client.responses.create(model="x", input=QUESTION, max_output_tokens=16, temperature=0,
                                         stream=True, extra_body=WHOLE_PROMPT):
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            final = event.response
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_item.done" in types
    assert text == plain.output_text == final.output_text
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_stream_sequence_numbers(client):
    seq = [e.sequence_number for e in client.responses.create(model="x", input=QUESTION, max_output_tokens=4,
                                                               stream=True)]
    assert seq == list(range(1, len(seq) + 1))


def test_function_call_round_trip(client):
    city = {"type": "string", "minLength": 1, "maxLength": 20}
    tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
              "parameters": {"type": "object", "properties": {"city": city}, "required": ["city"]}}]
    r = client.responses.create(model="x", input="What is the weather in Paris?", tools=tools, max_output_tokens=64,
                                temperature=0, tool_choice={"type": "function", "name": "get_weather"})
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    follow = client.responses.create(model="x", tools=tools, max_output_tokens=16, temperature=0, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 24 degrees"}])
    assert follow.status == "completed" and follow.usage.input_tokens > r.usage.input_tokens


def test_input_tokens(server, client):
    n = server.post("/v1/responses/input_tokens", json={"input": QUESTION}).json()
    r = client.responses.create(model="x", input=QUESTION, max_output_tokens=1)
    assert n == {"object": "response.input_tokens", "input_tokens": r.usage.input_tokens}


@pytest.mark.parametrize("body, needle", [
    ({}, "'input' is required"),
    ({"input": 5}, "'input' must be"),
    ({"input": [{"type": "computer_call"}]}, "unsupported item type"),
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
    ({"input": "hi", "max_output_tokens": "many"}, "'max_output_tokens'"),
])
def test_bad_requests_are_400_naming_the_field(server, body, needle):
    r = server.post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
