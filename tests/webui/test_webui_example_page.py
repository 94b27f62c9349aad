"""The spec's example page (README, end): a custom page served with --path that imports /completion.js."""
from __future__ import annotations

import pathlib
import shutil

import pytest

from ui_helpers import wait_slots_idle

WEBUI = pathlib.Path(__file__).resolve().parents[2] / "webui"
N_PREDICT = 12

# Records what the page passes to document.write (then writes it as usual).
RECORD_WRITES = """(() => {
  window.__written = [];
  const write = Document.prototype.write;
  Document.prototype.write = function (...parts) {
    window.__written.push(parts.join(''));
    return write.apply(this, parts);
  };
})();"""


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    shutil.copy(WEBUI / "example.html", site / "index.html")
    shutil.copy(WEBUI / "completion.js", site / "completion.js")
    # The page sends no n_predict: -n keeps the server's default generation short.
    return server_factory("-c", "2048", "-np", "1", "-n", str(N_PREDICT), "--path", str(site))


def test_example_page_writes_the_completion(page, server):
    page.add_init_script(RECORD_WRITES)
    with page.expect_request("**/completion") as req:
        # document.write keeps the document open, so don't wait for the load event.
        response = page.goto(server.url + "/", wait_until="commit")
    assert response.ok
    assert req.value.url == server.url + "/completion"
    sent = req.value.post_data_json
    assert sent["stream"] is True and sent["prompt"].startswith("### Instruction:\nWrite dad jokes")

    # Text written by document.write appears in the page (the prompt itself is only in the script),
    # chunk by chunk as it streams.
    page.wait_for_function("document.body && document.body.innerText.trim().length > 0")
    wait_slots_idle(server, 1, timeout=60)
    written = page.evaluate("window.__written")
    assert len(written) > 1 and "".join(written).strip() != "", written
    assert page.evaluate("document.body.textContent").strip() != ""
    # The page is the copied example, not the built-in web UI.
    assert page.locator("#chat-input").count() == 0
