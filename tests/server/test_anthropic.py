"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) through the official
``anthropic`` client, against the real server and the default model."""
from __future__ import annotations

import anthropic
import pytest

from helpers import ANSWERED_QUESTION

KEY = "sk-test-anthropic"
QUESTION = [{"role": "user", "content": ANSWERED_QUESTION}]


@pytest.fixture(scope="module")
def server(server_factory):
    # greedy by default (--temp 0): this client version sends no temperature
    return server_factory("-c", "2048", "-np", "2", "--api-key", KEY, "--temp", "0")


@pytest.fixture(scope="module")
def client(server):
    # the client sends the key as X-Api-Key
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def test_message(client):
    m = client.messages.create(model="claude-x", max_tokens=24, messages=QUESTION,
                               system="You are a helpful assistant.")
    assert m.type == "message" and m.role == "assistant" and m.model == "claude-x"
    assert [b.type for b in m.content] == ["text"] and "Paris" in m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert 10 < m.usage.input_tokens and 0 < m.usage.output_tokens <= 24


def test_system_prompt_as_blocks_and_content_blocks(client):
    a = client.messages.create(model="x", max_tokens=8, messages=QUESTION,
                               system="You are a helpful assistant.")
    b = client.messages.create(model="x", max_tokens=8, system=[
        {"type": "text", "text": "You are a helpful "}, {"type": "text", "text": "assistant."}], messages=[
        {"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}])
    assert a.content[0].text == b.content[0].text and a.usage.input_tokens == b.usage.input_tokens


def test_max_tokens_and_stop_sequences(client):
    m = client.messages.create(model="x", max_tokens=3, messages=QUESTION)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3
    m = client.messages.create(model="x", max_tokens=32, messages=QUESTION, stop_sequences=["Paris"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "Paris" and "Paris" not in m.content[0].text


def test_stream_events_add_up_to_the_message(client):
    plain = client.messages.create(model="x", max_tokens=16, messages=QUESTION)
    names = []
    with client.messages.stream(model="x", max_tokens=16, messages=QUESTION) as stream:
        for event in stream:
            names.append(event.type)
        final = stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_start" in names and "content_block_stop" in names and "message_delta" in names
    assert final.content[0].text == plain.content[0].text
    assert final.stop_reason == plain.stop_reason and final.usage.output_tokens == plain.usage.output_tokens


def test_count_tokens(client):
    n = client.messages.count_tokens(model="x", messages=QUESTION, system="You are a helpful assistant.")
    m = client.messages.create(model="x", max_tokens=1, messages=QUESTION, system="You are a helpful assistant.")
    assert n.input_tokens == m.usage.input_tokens


def test_tool_use_round_trip(client):
    """A tool_use turn and its tool_result go into the prompt; tools are offered to the model."""
    tools = [{"name": "get_weather", "description": "The weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": "Sunny, 24 degrees"}]}]
    with_result = client.messages.count_tokens(model="x", messages=messages, tools=tools)
    without = client.messages.count_tokens(model="x", messages=messages[:1], tools=tools)
    no_tools = client.messages.count_tokens(model="x", messages=messages[:1])
    assert with_result.input_tokens > without.input_tokens > no_tools.input_tokens
    m = client.messages.create(model="x", max_tokens=16, messages=messages, tools=tools)
    assert m.content and m.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_forced_tool_call_gives_a_tool_use_block(client):
    city = {"type": "string", "minLength": 1, "maxLength": 20}
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": city},
                                                      "required": ["city"]}}]
    m = client.messages.create(model="x", max_tokens=64, tools=tools,
                               tool_choice={"type": "tool", "name": "get_weather"},
                               messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and isinstance(uses[0].input.get("city"), str)


def test_bad_requests_are_400_with_the_field_named(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="x", max_tokens=8, messages=[{"role": "robot", "content": "hi"}])
    assert "messages[0]" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="x", max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "AAAA"}}]}])
    assert "this model does not accept images (start the server with --mmproj)" in e.value.message


def test_wrong_key_is_401(server):
    bad = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="x", max_tokens=1, messages=QUESTION)
