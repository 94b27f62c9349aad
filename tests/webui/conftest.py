"""Browser fixtures for the web UI tests: Debian's headless Chromium driven by Playwright.

The browser is the system's /usr/bin/chromium (``apt-get install chromium``); Playwright's own
browser downloads (``playwright install``) are never used. A missing browser or a missing
``playwright`` package fails the tests with a message saying what to install, rather than
skipping them.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Generation on a loaded 2-core machine can be slow: UI waits are generous, and each test's
# requests keep n_predict small so they normally finish in seconds.
UI_TIMEOUT_MS = 90_000


def _require_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.fail("the web UI tests need the playwright Python package: pip install '.[test]' "
                    f"(or pip install playwright) — {exc}", pytrace=False)
    return sync_playwright


def _require_chromium() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"the web UI tests need Chromium at {CHROMIUM}: run `apt-get install chromium` "
                    "(Playwright's browser downloads are not used)", pytrace=False)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (each test gets a fresh context)."""
    _require_chromium()
    sync_playwright = _require_playwright()
    from playwright.sync_api import expect
    expect.set_options(timeout=UI_TIMEOUT_MS)
    pw = sync_playwright().start()
    try:
        # launch() gives the browser a fresh temporary user-data dir.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                               chromium_sandbox=False)
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


class RequestLog:
    """Every URL the browser asked for, in order (recorded from the context, so all pages count)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def record(self, request) -> None:
        self.urls.append(request.url)

    def foreign(self) -> list[str]:
        """Requests that would leave the loopback server: anything not http(s)://127.0.0.1."""
        out = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.scheme not in ("http", "https") or parts.hostname != "127.0.0.1":
                out.append(url)
        return out


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def context(browser, request_log):
    """A fresh browser context (empty localStorage / sessionStorage) per test.

    Every request is recorded, and any request for a host other than 127.0.0.1 fails the test:
    the web UI must never reach out to CDNs, fonts, analytics and the like.
    """
    ctx = browser.new_context()
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    ctx.on("request", request_log.record)
    yield ctx
    ctx.close()
    foreign = request_log.foreign()
    assert not foreign, f"the page made requests away from 127.0.0.1: {foreign}"


@pytest.fixture
def page(context):
    """A page that also collects uncaught page errors (checked at the end of the test)."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.page_errors = errors
    yield pg
    assert not errors, f"uncaught errors in the page: {errors}"
