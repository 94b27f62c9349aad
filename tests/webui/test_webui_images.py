"""The web UI with a model that accepts images (--mmproj): attach (file picker and paste), send as
OpenAI image_url parts, see the image in the conversation; no attach button without --mmproj."""
from __future__ import annotations

import base64
import json

import pytest

from images import make_vision_model, png
from ui_helpers import send_chat, set_setting, wait_done, wait_model_shown

RED = png(20, 20, (230, 10, 10))


@pytest.fixture(scope="module")
def vision_server(server_factory, tmp_path_factory):
    model, proj = make_vision_model(tmp_path_factory.mktemp("ui-vision"))
    return server_factory("-m", model, "--mmproj", proj, "-c", "1024")


@pytest.fixture(scope="module")
def plain_server(server_factory):
    return server_factory("-c", "512")


def open_ui(page, server):
    response = page.goto(server.url + "/")
    assert response.ok, response.status
    wait_model_shown(page)
    return page


def test_attach_an_image_and_send_it(page, vision_server):
    page = open_ui(page, vision_server)
    page.wait_for_selector("#attach:visible")
    set_setting(page, "n_predict", 2)
    page.set_input_files("#image-input", files=[{"name": "red.png", "mimeType": "image/png", "buffer": RED}])
    page.wait_for_selector("#attachments img")
    with page.expect_response("**/v1/chat/completions") as resp, \
            page.expect_request("**/v1/chat/completions") as req:
        send_chat(page, "What colour is this?")
    body = json.loads(req.value.post_data)
    url = "data:image/png;base64," + base64.b64encode(RED).decode()
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour is this?"}]}]
    assert resp.value.status == 200
    wait_done(page)
    assert page.locator("#messages .message.user img").get_attribute("src") == url
    assert page.is_hidden("#attachments")
    assert page.text_content("#error") == ""
    # the conversation (with its image) survives a reload
    page.reload()
    wait_model_shown(page)
    assert page.locator("#messages .message.user img").get_attribute("src") == url


def test_paste_an_image(page, vision_server):
    page = open_ui(page, vision_server)
    page.wait_for_selector("#attach:visible")
    page.evaluate("""(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
      const event = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
      document.getElementById('chat-input').dispatchEvent(event);
    }""", base64.b64encode(RED).decode())
    page.wait_for_selector("#attachments img")
    assert page.locator("#attachments img").count() == 1
    page.click("#attachments button")
    page.wait_for_selector("#attachments", state="hidden")
    # images go with chat messages only: no button in completion mode
    page.click("#mode-completion")
    page.wait_for_selector("#attach", state="hidden")
    page.click("#mode-chat")
    page.wait_for_selector("#attach:visible")


def test_no_attach_button_without_mmproj(page, plain_server):
    page = open_ui(page, plain_server)
    assert page.is_hidden("#attach")
