"""The web UI at / in headless Chromium, against the real server and the default model."""
from __future__ import annotations

import json
import time

import pytest
import requests

from ui_helpers import (WATCH_ASSISTANT, send_chat, set_setting, tokens_per_second, wait_done, wait_model_shown,
                        wait_slots_idle)

N_SLOTS = 2


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", str(N_SLOTS))


@pytest.fixture
def ui(page, server):
    """The web UI, loaded and ready (model name shown, so /props answered)."""
    response = page.goto(server.url + "/")
    assert response.ok, response.status
    wait_model_shown(page)
    return page


def assistant_texts(page) -> list[str]:
    return page.locator("#messages .message.assistant").all_text_contents()


def test_chat_streams_a_reply(ui, server):
    page = ui
    assert page.title() == "llamacy"
    assert page.is_visible("#panel-chat") and not page.is_visible("#panel-completion")
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    set_setting(page, "n_predict", 16)
    page.evaluate(WATCH_ASSISTANT)

    with page.expect_request("**/v1/chat/completions") as req:
        send_chat(page, "Say hello")
    body = json.loads(req.value.post_data)
    assert body["stream"] is True and body["max_tokens"] == 16
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]

    # While streaming: Send is disabled, Stop enabled, and the user's message is shown.
    page.wait_for_selector("#messages .message.assistant.streaming")
    assert page.is_disabled("#send")
    assert page.locator("#messages .message.user").all_text_contents() == ["Say hello"]
    wait_done(page)

    final = assistant_texts(page)
    assert len(final) == 1 and final[0].strip() != ""
    assert page.locator("#messages .message.assistant.streaming").count() == 0
    assert page.input_value("#chat-input") == ""

    # The reply grew chunk by chunk while it streamed: several distinct texts were shown, each
    # extending the previous one, the earlier ones while the message was still marked streaming.
    snaps = page.evaluate("window.__assistantSnapshots")
    texts = [s["text"] for s in snaps if s["text"]]
    assert len(texts) >= 2, snaps
    for shorter, longer in zip(texts, texts[1:]):
        assert longer.startswith(shorter) and len(longer) > len(shorter), texts
    assert texts[-1] == final[0]
    assert any(s["streaming"] and s["text"] for s in snaps), snaps

    assert tokens_per_second(page) > 0
    assert not page.is_visible("#error")


def test_stop_frees_the_slot(ui, server):
    page = ui
    set_setting(page, "n_predict", 2000)
    send_chat(page, "Count from one to one thousand, one number per line.")
    # Mid-stream: some text has arrived and the request is still running.
    page.wait_for_function("""() => {
      const m = document.querySelector('#messages .message.assistant.streaming');
      return m && m.textContent.length > 0;
    }""")
    assert page.is_enabled("#stop")
    health = requests.get(server.url + "/health", timeout=5).json()
    assert health["slots_processing"] == 1, health

    page.click("#stop")
    page.wait_for_selector("#send:enabled", timeout=10_000)
    assert page.is_disabled("#stop")
    wait_slots_idle(server, N_SLOTS, timeout=10)

    # The partial reply stays (and stops growing); no error is shown for a user stop.
    partial = assistant_texts(page)
    assert len(partial) == 1 and partial[0] != ""
    time.sleep(0.5)
    assert assistant_texts(page) == partial
    assert not page.is_visible("#error")
    saved = page.evaluate("JSON.parse(localStorage.getItem('llamacy.conversation'))")
    assert saved[-1] == {"role": "assistant", "content": partial[0]}


def test_server_error_is_shown(ui, server):
    """A request the server rejects (bad grammar) shows its message; the text goes back to the input."""
    page = ui
    page.fill("#settings-grammar", "root ::= (")
    send_chat(page, "Say hello")
    page.wait_for_selector("#error", state="visible")
    wait_done(page)
    assert "grammar" in page.text_content("#error").lower()
    assert page.locator("#messages .message").count() == 0
    assert page.input_value("#chat-input") == "Say hello"
    assert page.evaluate("localStorage.getItem('llamacy.conversation')") is None
    wait_slots_idle(server, N_SLOTS)


def test_completion_mode(ui, server):
    page = ui
    page.click("#mode-completion")
    assert page.is_visible("#panel-completion") and not page.is_visible("#panel-chat")
    assert page.get_attribute("#mode-completion", "aria-selected") == "true"
    set_setting(page, "n_predict", 16)
    set_setting(page, "temperature", 0)
    prompt = "The capital of France is"
    page.fill("#completion-prompt", prompt)

    with page.expect_request("**/completion") as req:
        page.click("#send")
    wait_done(page)
    sent = json.loads(req.value.post_data)
    assert sent["prompt"] == prompt and sent["stream"] is True and sent["n_predict"] == 16

    output = page.text_content("#completion-output")
    assert output.strip() != "" and not output.startswith(prompt)
    assert "Paris" in output
    # Greedy decoding: the streamed pieces add up to the server's own non-streamed answer.
    plain = requests.post(server.url + "/completion", json={**sent, "stream": False}, timeout=120)
    assert plain.status_code == 200, plain.text
    assert output == plain.json()["content"]

    assert tokens_per_second(page) > 0
    assert page.input_value("#completion-prompt") == prompt  # the prompt is left as typed
    assert not page.is_visible("#error")


def test_conversation_persists_until_new_chat(ui, server):
    page = ui
    set_setting(page, "n_predict", 8)
    send_chat(page, "Say hello")
    wait_done(page)
    reply = assistant_texts(page)
    assert len(reply) == 1 and reply[0] != ""
    expected = [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": reply[0]}]
    assert page.evaluate("JSON.parse(localStorage.getItem('llamacy.conversation'))") == expected

    page.reload()
    page.wait_for_selector("#messages .message.assistant")
    assert page.locator("#messages .message.user").all_text_contents() == ["Say hello"]
    assert assistant_texts(page) == reply
    assert page.input_value("#settings-n_predict") == "8"  # settings persist too

    page.click("#new-chat")
    page.wait_for_function("document.querySelectorAll('#messages .message').length === 0")
    assert page.evaluate("localStorage.getItem('llamacy.conversation')") is None
    page.reload()
    page.wait_for_load_state()
    wait_model_shown(page)
    assert page.locator("#messages .message").count() == 0


def test_no_request_leaves_loopback(ui, server, request_log):
    """Every request the page makes, in both modes, goes to the server on 127.0.0.1."""
    page = ui
    page.click("#mode-completion")
    page.select_option("#completion-template", "chatml")
    set_setting(page, "n_predict", 4)
    page.fill("#completion-prompt", "Once upon a time")
    page.click("#send")
    wait_done(page)
    page.click("#mode-chat")
    page.click("#settings-reset")
    page.reload()
    wait_model_shown(page)

    paths = {u.split(server.url, 1)[1] for u in request_log.urls if u.startswith(server.url)}
    assert {"/", "/app.js", "/completion.js", "/style.css", "/props", "/completion"} <= paths, request_log.urls
    assert request_log.foreign() == [], request_log.urls
