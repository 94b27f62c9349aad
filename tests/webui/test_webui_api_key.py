"""The web UI against a server started with --api-key."""
from __future__ import annotations

import pytest
import requests

from ui_helpers import send_chat, set_setting, wait_done, wait_model_shown

KEY = "k1"


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", "1", "--api-key", KEY)


def test_api_key_form_then_chat(page, server):
    # The static files are public; the API is not.
    for path in ("/", "/app.js", "/completion.js", "/style.css"):
        assert requests.get(server.url + path, timeout=10).status_code == 200, path
    assert requests.get(server.url + "/props", timeout=10).status_code == 401

    response = page.goto(server.url + "/")
    assert response.ok
    # The first 401 (from /props, at load) brings up the key form.
    page.wait_for_selector("#api-key-form", state="visible")
    assert page.text_content("#model-name") == ""

    # A wrong key is rejected and asked for again.
    page.fill("#api-key-input", "wrong")
    page.click("#api-key-save")
    page.wait_for_function("document.getElementById('api-key-label').textContent.includes('rejected')")
    page.wait_for_selector("#api-key-form", state="visible")

    page.fill("#api-key-input", KEY)
    page.click("#api-key-save")
    page.wait_for_selector("#api-key-form", state="hidden")
    # The /props request is retried with the key.
    wait_model_shown(page)
    assert page.evaluate("sessionStorage.getItem('llamacy.api_key')") == KEY
    assert page.evaluate("localStorage.getItem('llamacy.api_key')") is None

    set_setting(page, "n_predict", 8)
    with page.expect_request("**/v1/chat/completions") as req:
        send_chat(page, "Say hello")
    assert req.value.headers.get("authorization") == f"Bearer {KEY}"
    wait_done(page)
    replies = page.locator("#messages .message.assistant").all_text_contents()
    assert len(replies) == 1 and replies[0].strip() != ""
    assert not page.is_visible("#error")
    assert not page.is_visible("#api-key-form")


def test_chat_before_key_asks_for_it_and_retries(page, server):
    page.goto(server.url + "/")
    page.wait_for_selector("#api-key-form", state="visible")
    set_setting(page, "n_predict", 4)
    # Sending without a key: the 401 keeps the message in the input, and the send is retried
    # once the key is saved.
    send_chat(page, "Say hi")
    wait_done(page)
    assert page.locator("#messages .message").count() == 0
    assert page.input_value("#chat-input") == "Say hi"
    page.fill("#api-key-input", KEY)
    with page.expect_request("**/v1/chat/completions") as req:
        page.click("#api-key-save")
    assert req.value.headers.get("authorization") == f"Bearer {KEY}"
    page.wait_for_selector("#messages .message.assistant")
    wait_done(page)
    assert page.locator("#messages .message.user").all_text_contents() == ["Say hi"]
    assert page.locator("#messages .message.assistant").all_text_contents()[0].strip() != ""
