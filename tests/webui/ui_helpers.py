"""Helpers shared by the web UI tests (importable: tests/webui is on sys.path)."""
from __future__ import annotations

import re
import time

import requests

NUMBER = re.compile(r"\d+(?:\.\d+)?")

# Records every distinct text of the last assistant message, and whether it was still streaming,
# from a MutationObserver: lets a test see the message grow without racing the stream.
WATCH_ASSISTANT = """() => {
  window.__assistantSnapshots = [];
  const messages = document.getElementById('messages');
  const record = () => {
    const all = messages.querySelectorAll('.message.assistant');
    const last = all[all.length - 1];
    if (!last) return;
    const text = last.textContent;
    const snaps = window.__assistantSnapshots;
    if (snaps.length && snaps[snaps.length - 1].text === text) return;
    snaps.push({ text, streaming: last.classList.contains('streaming') });
  };
  new MutationObserver(record).observe(messages, { childList: true, subtree: true, characterData: true });
}"""


def wait_model_shown(page) -> None:
    """Waits until the header shows the model name, i.e. the page's /props request succeeded."""
    from playwright.sync_api import expect

    expect(page.locator("#model-name")).to_have_text(re.compile(r"\S"))


def set_setting(page, name: str, value) -> None:
    """Types a value into a settings field (#settings-<name>); the page saves it on input."""
    page.fill(f"#settings-{name}", str(value))


def wait_done(page) -> None:
    """Waits until no request is in flight: Send enabled, Stop disabled."""
    page.wait_for_selector("#send:enabled")
    page.wait_for_selector("#stop:disabled")


def send_chat(page, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#send")


def tokens_per_second(page) -> float:
    """The number shown in #tokens-per-second (fails if there is none)."""
    shown = page.text_content("#tokens-per-second") or ""
    match = NUMBER.search(shown)
    assert match, f"#tokens-per-second shows no number: {shown!r}"
    return float(match.group(0))


def wait_slots_idle(server, total: int, timeout: float = 10.0, headers: dict | None = None) -> dict:
    """Polls GET /health until slots_idle == total (every slot free); returns that answer."""
    deadline = time.monotonic() + timeout
    health: dict = {}
    while True:
        try:
            health = requests.get(server.url + "/health", headers=headers, timeout=5).json()
        except (requests.RequestException, ValueError):
            health = {}
        if health.get("slots_idle") == total and health.get("slots_processing") == 0:
            return health
        if time.monotonic() >= deadline:
            raise AssertionError(f"the server did not free its slots within {timeout} s: {health}")
        time.sleep(0.1)
